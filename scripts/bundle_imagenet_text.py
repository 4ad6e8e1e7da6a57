#!/usr/bin/env python3
"""Writes the ImageNet-1k class names and the 80 OpenAI ImageNet prompt templates that open_clip
ships (open_clip/zero_shot_metadata.py, MIT licence) into Sources/RefractSegment/Resources/,
one per line. The templates are open_clip's lambdas called with "{}" so Refract fills them the
same way. Developer tool; the generated files are committed.

Usage: .venv/bin/python scripts/bundle_imagenet_text.py
"""
import os

import open_clip
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
out = os.path.join(root, "Sources", "RefractSegment", "Resources")
os.makedirs(out, exist_ok=True)
classes = list(IMAGENET_CLASSNAMES)
templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
assert len(classes) == 1000 and len(templates) == 80
assert all("\n" not in c and c.strip() == c and c for c in classes)
assert all(t.count("{}") == 1 for t in templates)
with open(os.path.join(out, "imagenet_classes.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(classes) + "\n")
with open(os.path.join(out, "openai_imagenet_templates.txt"), "w", encoding="utf-8") as f:
    f.write("\n".join(templates) + "\n")
print(f"open_clip {open_clip.__version__}: wrote {len(classes)} classes and {len(templates)} templates to {out}")
