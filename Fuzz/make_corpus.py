#!/usr/bin/env python3
"""Writes the committed seed corpus of the fuzz harnesses: Fuzz/corpus/<harness>/.

Python standard library only. Seeds are small valid and near-valid inputs: some generated here,
some copied from Tests/Fixtures (named after their fixture). Deterministic: rerunning it rewrites
the same bytes. Run from anywhere:

    python3 Fuzz/make_corpus.py
"""

import json
import os
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "Fuzz", "corpus")
FIXTURES = os.path.join(ROOT, "Tests", "Fixtures")
MAX_SEED = 32 * 1024  # no seed larger than the largest -max_len scripts/fuzz.sh uses


def put(harness, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    assert len(data) <= MAX_SEED, f"{harness}/{name} is {len(data)} bytes"
    d = os.path.join(CORPUS, harness)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(harness, fixture, name=None):
    src = os.path.join(FIXTURES, fixture)
    with open(src, "rb") as f:
        put(harness, name or os.path.basename(fixture), f.read())


# MARK: safetensors

def safetensors(entries, metadata=None, pad=0, trailing=b""):
    """entries: [(name, dtype, shape, bytes)] laid out in order."""
    header, data, offset = {}, b"", 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, payload in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(payload)]}
        data += payload
        offset += len(payload)
    text = json.dumps(header, separators=(",", ":")).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + data + trailing


def f32(*values):
    return struct.pack(f"<{len(values)}f", *values)


def gen_safetensors():
    h = "safetensors"
    put(h, "empty_header", safetensors([]))
    put(h, "one_f32", safetensors([("w", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6))]))
    put(h, "scalar_and_empty", safetensors([("s", "F32", [], f32(0.5)), ("e", "F32", [0, 4], b"")]))
    put(h, "mixed_dtypes", safetensors([
        ("a.f16", "F16", [3], struct.pack("<3e", 1.0, -2.0, 0.25)),
        ("b.bf16", "BF16", [2], bytes([0x80, 0x3F, 0x00, 0xC0])),
        ("c.i64", "I64", [2], struct.pack("<2q", 7, -1)),
        ("d.u8", "U8", [4], bytes([1, 2, 3, 4])),
        ("e.bool", "BOOL", [1], b"\x01"),
    ], metadata={"format": "pt"}, pad=5))
    put(h, "metadata_only", safetensors([], metadata={"format": "refract-contributions", "shard": "0"}))
    put(h, "shard_like", safetensors([
        ("image_index", "I64", [2], struct.pack("<2q", 0, 1)),
        ("embedding", "F32", [2, 4], f32(*range(8))),
    ], metadata={"format": "refract-contributions", "runId": "00000000-0000-0000-0000-000000000000", "shard": "0"}))
    # Near-valid: each breaks one rule of the format.
    put(h, "near_trailing_bytes", safetensors([("w", "F32", [1], f32(1))], trailing=b"\0\0\0\0"))
    put(h, "near_wrong_length", safetensors([("w", "F32", [3], f32(1, 2))]))
    ok = safetensors([("w", "F32", [2], f32(1, 2))])
    put(h, "near_header_too_long", struct.pack("<Q", 1 << 40) + ok[8:])
    dup = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    put(h, "near_duplicate_key", struct.pack("<Q", len(dup)) + dup + f32(1))


# MARK: npy

def npy(descr, shape, payload, version=1, fortran=False, pad_to=64):
    shape_text = "(" + "".join(f"{d}, " for d in shape).rstrip(" ") + ")" if len(shape) != 1 else f"({shape[0]},)"
    header = f"{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}"
    prefix = 10 if version == 1 else 12
    total = prefix + len(header) + 1
    header += " " * ((pad_to - total % pad_to) % pad_to) + "\n"
    head = b"\x93NUMPY" + bytes([version, 0])
    head += struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return head + header.encode("latin-1") + payload


def gen_npy():
    h = "npy"
    put(h, "f4_2x3", npy("<f4", [2, 3], f32(*range(6))))
    put(h, "f8_scalar", npy("<f8", [], struct.pack("<d", 3.5)))
    put(h, "i8_v2", npy("<i8", [3], struct.pack("<3q", 1, 2, 3), version=2))
    put(h, "i4_v3_empty", npy("<i4", [0, 5], b"", version=3))
    put(h, "u1", npy("|u1", [4], bytes([0, 1, 2, 255])))
    put(h, "b1", npy("|b1", [2, 2], bytes([0, 1, 1, 0])))
    put(h, "near_fortran", npy("<f4", [2], f32(1, 2), fortran=True))
    put(h, "near_short_data", npy("<f4", [4], f32(1, 2)))
    put(h, "near_big_endian", npy(">f4", [1], f32(1)))
    for fixture in ["images/png_rgb8_interlaced_1x1.rgb.npy", "images/resize_png_small_20x27_3x1_bicubic.npy",
                    "segment/metrics/ap_4_labels.npy"]:
        copy(h, fixture, "fixture_" + os.path.basename(fixture))


# MARK: config (config file, then NUL, then preprocessor_config.json for the transformers layout)

def gen_config():
    h = "config"
    with open(os.path.join(FIXTURES, "models/openclip-tiny/open_clip_config.json"), "rb") as f:
        openclip = f.read()
    with open(os.path.join(FIXTURES, "models/hf-tiny/config.json"), "rb") as f:
        hf = f.read()
    with open(os.path.join(FIXTURES, "models/hf-tiny/preprocessor_config.json"), "rb") as f:
        pre = f.read()
    put(h, "openclip_tiny", openclip)
    put(h, "hf_tiny_with_preprocessor", hf + b"\0" + pre)
    put(h, "hf_tiny_no_preprocessor", hf)
    for model in ["deit-tiny", "dinov2-reg-tiny", "swin-tiny"]:
        copy(h, f"timm/{model}/config.json", "timm_" + model.replace("-", "_"))
    put(h, "openclip_pairs", json.dumps({
        "model_cfg": {"embed_dim": 8, "vision_cfg": {"image_size": [32, 32], "patch_size": [8, 8], "width": 32,
                                                     "layers": 1, "head_width": 8, "mlp_ratio": 2.0,
                                                     "norm_kwargs": {"eps": 1e-6}},
                      "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1}},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear",
                           "resize_mode": "squash"}}))
    put(h, "hf_defaults", b'{}\0{"size": 224, "crop_size": 224}')
    put(h, "hf_size_dict", json.dumps({"model_type": "clip", "projection_dim": 8,
                                       "vision_config": {"hidden_size": 16, "num_attention_heads": 2, "image_size": 16,
                                                         "patch_size": 4, "hidden_act": "quick_gelu"},
                                       "text_config": {"hidden_size": 16, "num_attention_heads": 4}})
        + "\0" + json.dumps({"size": {"height": 16, "width": 16}, "crop_size": {"height": 16, "width": 16},
                             "resample": 2}))
    put(h, "near_zero_patch", b'{"model_cfg": {"embed_dim": 8, "vision_cfg": {"image_size": 32, "patch_size": 7},'
                              b' "text_cfg": {}}}')


# MARK: tokenizer (text lines)

def gen_tokenizer():
    h = "tokenizer"
    for fixture in ["models/inputs/texts.txt", "models/inputs/classes.txt", "models/inputs/templates.txt"]:
        copy(h, fixture, "fixture_" + os.path.basename(fixture))
    with open(os.path.join(FIXTURES, "tokenizer/golden_openclip.json"), encoding="utf-8") as f:
        rows = json.load(f)["rows"]
    # A few golden inputs per label (unicode, mojibake, HTML entities, emoji, long words...).
    by_label = {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["text"])
    for label in sorted(by_label):
        text = "\n".join(t.replace("\n", " ") for t in by_label[label][:4])
        if 0 < len(text.encode("utf-8")) <= 2048:
            put(h, "golden_" + "".join(c if c.isalnum() else "_" for c in label), text)


# MARK: image (JPEG and PNG fixtures: one of each kind the decoder handles, plus broken ones)

IMAGE_SEEDS = [
    # JPEG: baseline subsamplings, progressive, arithmetic coding, restart markers, gray, CMYK/YCCK,
    # Adobe RGB, EXIF.
    "jpeg_baseline_420_23x37.jpg", "jpeg_440_37x23.jpg", "jpeg_progressive_411_37x23.jpg",
    "jpeg_gray_progressive_23x37.jpg", "jpeg_arith_37x23.jpg", "jpeg_restart_64x48.jpg",
    "jpeg_cmyk_adobe_37x23.jpg", "jpeg_ycck_50x50.jpg", "jpeg_rgb_adobe0_37x23.jpg", "jpeg_exif_rotated_37x23.jpg",
    # PNG: every colour type and bit depth family, tRNS, interlacing, a short palette.
    "png_gray1_interlaced_5x3.png", "png_gray4_23x37.png", "png_gray16_interlaced_37x23.png",
    "png_gray_alpha8_37x23.png", "png_palette2_interlaced_23x37.png", "png_palette_short_37x23.png",
    "png_palette_trns_37x23.png", "png_rgb8_interlaced_1x1.png", "png_rgb8_trns_37x23.png",
    "png_gray_alpha16_37x23.png",
    # Broken: truncated, corrupt, declared huge, not an image.
    "bad_truncated.jpg", "bad_truncated_progressive.jpg", "bad_truncated_header.png", "bad_corrupt.png",
    "bad_huge.jpg", "bad_huge.png", "bad_text.jpg",
]


def gen_image():
    for name in IMAGE_SEEDS:
        copy("image", "images/" + name)


# MARK: manifest (run manifest.json)

def manifest(images=2, shard_size=2, shards=None, skipped=None, complete=False, tensors=None, constants=None):
    return {
        "format": "refract-contributions", "formatVersion": 1,
        "runId": "3F2504E0-4F89-11D3-9A0C-0305E82C3301", "createdBy": "refract 0.2.0",
        "model": {"id": "Tests/Fixtures/models/openclip-tiny", "layout": "openclip", "commit": None,
                  "weightsSHA256": "0" * 64, "weightFiles": ["open_clip_model.safetensors"]},
        "preprocessing": {"imageSize": 32, "mean": [0.48, 0.45, 0.4], "resizeMode": "shortest"},
        "convention": "faithful",
        "dimensions": {"heads": 2, "layers": 2, "tokens": 17, "width": 64, "embed": 24},
        "options": {"dtype": "float32", "tokenLayers": [], "batchSize": 8},
        "tensors": tensors if tensors is not None else [
            {"name": "embedding", "shape": [24], "dtype": "float32", "description": "image embedding"},
            {"name": "attn", "shape": [2, 2, 24], "dtype": "float16", "description": "per-head direct effects"}],
        "constants": constants if constants is not None else [],
        "images": [{"path": f"img{i}.png", "label": "cat" if i % 2 else None, "columns": None} for i in range(images)],
        "classNames": ["cat", "dog"],
        "shardSize": shard_size,
        "shards": shards if shards is not None else [],
        "skipped": skipped if skipped is not None else [],
        "complete": complete,
    }


def gen_manifest():
    h = "manifest"
    dump = lambda m: json.dumps(m, indent=2, sort_keys=True) + "\n"
    put(h, "fresh", dump(manifest()))
    put(h, "no_images_complete", dump(manifest(images=0, complete=True)))
    put(h, "one_shard", dump(manifest(images=3, shards=[
        {"file": "shard-00000.safetensors", "first": 0, "count": 2, "rows": 1, "sha256": "a" * 64}],
        skipped=[{"index": 1, "path": "img1.png", "error": "img1.png: JPEG: corrupt"}])))
    put(h, "complete_with_constants", dump(manifest(images=1, shard_size=4, complete=True, shards=[
        {"file": "shard-00000.safetensors", "first": 0, "count": 1, "rows": 1, "sha256": "b" * 64}],
        constants=[{"name": "projection", "shape": [64, 24], "dtype": "float32", "description": ""}])))
    put(h, "near_bad_version", dump(dict(manifest(), formatVersion=2)))
    put(h, "near_shard_size_zero", dump(manifest(shard_size=0)))
    put(h, "near_bad_name", dump(manifest(tensors=[{"name": "../x", "shape": [1], "dtype": "float32", "description": ""}])))


# MARK: hdf5 (MATLAB v7.3 .mat files from the segmentation fixtures, and the reader's storage variants)

def gen_hdf5():
    h = "hdf5"
    d = os.path.join(FIXTURES, "segment", "data")
    for name in sorted(os.listdir(d)):
        if name.endswith(".mat") or name.endswith(".h5"):
            copy(h, "segment/data/" + name)
    for name in sorted(os.listdir(os.path.join(FIXTURES, "hdf5"))):
        if name.endswith(".h5"):
            copy(h, "hdf5/" + name)


def main():
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    for gen in [gen_safetensors, gen_npy, gen_config, gen_tokenizer, gen_image, gen_manifest, gen_hdf5]:
        gen()
    for harness in sorted(os.listdir(CORPUS)):
        files = os.listdir(os.path.join(CORPUS, harness))
        size = sum(os.path.getsize(os.path.join(CORPUS, harness, f)) for f in files)
        print(f"{harness}: {len(files)} seeds, {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
