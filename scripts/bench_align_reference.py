#!/usr/bin/env python3
"""PyTorch reference for `refract-bench --only align`: the official CompAlign training loop.

The official code (Balasubramanian et al., NeurIPS 2024, `align_with_clip` and `Aligner` in
helpers/model_utils.py; docs: beyond-clip.md §2) trains, per batch of 32 images,

    W (C, d, D), b (D), both N(0, 0.02²)
    z = Σ_c x_c W_c + b                      (a batched matmul (C, B, d) @ (C, d, D), + b/C, summed over C)
    L = mean(1 − cos(normalize(z), t)) + λ · D · mean((W_cᵀ W_c − I)²)   (the Gram by a batched matmul), λ = 1
    loss.backward(); Adam(lr 3e-4, weight_decay 1e-6).step()

with autograd. This script is an independent implementation of that computation (same operations,
same optimiser), fed from a Refract run's safetensors shards (read through numpy memmaps, float16 →
float32, rows gathered one by one in a shuffled order, as a Dataset + DataLoader would) and the same
targets E.npy (joined to the run's rows by image path, as `refract align --clip-embeddings` does).
It times `--warmup` untimed steps, then `--steps` timed steps (batch load included), on
`--threads` threads, and prints one JSON object.

    python scripts/bench_align_reference.py --run RUN --targets E.npy --threads 2 [--warmup 3] [--steps 30]
"""

import argparse
import json
import os
import platform
import resource
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DTYPES = {"F16": np.float16, "F32": np.float32, "I64": np.int64}


def open_safetensors(path):
    """The tensors of a safetensors file as read-only numpy memmaps (name -> array)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        shape = tuple(info["shape"])
        if end == begin:
            out[name] = np.zeros(shape, dtype=dtype)
            continue
        out[name] = np.memmap(path, dtype=dtype, mode="r", offset=8 + n + begin, shape=shape)
    return out


class RunRows:
    """Row r of the run's `components` tensor (float16 or float32), [C, d], and its image path."""

    def __init__(self, run, tensor="components"):
        with open(os.path.join(run, "manifest.json")) as f:
            manifest = json.load(f)
        spec = next(t for t in manifest["tensors"] if t["name"] == tensor)
        self.shape = tuple(spec["shape"])
        images = [im["path"] for im in manifest["images"]]
        self.shards, self.where, self.paths = [], [], []
        for s, record in enumerate(manifest["shards"]):
            tensors = open_safetensors(os.path.join(run, record["file"]))
            self.shards.append(tensors[tensor])
            for local, index in enumerate(np.asarray(tensors["image_index"])):
                self.where.append((s, local))
                self.paths.append(images[int(index)])

    def __len__(self):
        return len(self.where)

    def __getitem__(self, r):
        s, local = self.where[r]
        return self.shards[s][local]


class Aligner(torch.nn.Module):
    """One map per component and a shared bias; the forward of the official `Aligner` (reduce=True)."""

    def __init__(self, components, width, clip_width):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.randn(components, width, clip_width) * 0.02)
        self.bias = torch.nn.Parameter(torch.randn(clip_width) * 0.02)

    def forward(self, x):  # x (C, B, d)
        return (torch.matmul(x, self.weights) + self.bias / x.shape[0]).sum(0)


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--targets", required=True, help="E.npy [N, D] with E.paths.txt beside it")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orthonormalize", type=float, default=1.0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_open = time.perf_counter()
    rows = RunRows(args.run)
    targets_all = np.load(args.targets, mmap_mode="r")
    with open(os.path.splitext(args.targets)[0] + ".paths.txt") as f:
        target_paths = f.read().splitlines()
    index = {p: i for i, p in enumerate(target_paths)}
    target_row = np.array([index[p] for p in rows.paths], dtype=np.int64)
    targets = torch.from_numpy(np.ascontiguousarray(targets_all[target_row], dtype=np.float32))   # [N, D], run row order
    open_seconds = time.perf_counter() - t_open

    c, d = rows.shape
    e = targets.shape[1]
    aligner = Aligner(c, d, e)
    optimizer = torch.optim.Adam(aligner.parameters(), lr=3e-4, weight_decay=1e-6)
    eye = torch.eye(e)
    order = np.random.default_rng(args.seed).permutation(len(rows))   # shuffle=True
    total = args.warmup + args.steps
    if total * args.batch > len(rows):
        sys.exit(f"{total} steps of {args.batch} need {total * args.batch} rows; the run has {len(rows)}")

    rss_before = rss_kib()
    min_loss, since_best = 10000.0, 0
    step_seconds, losses = [], []
    for step in range(total):
        t0 = time.perf_counter()
        batch = order[step * args.batch:(step + 1) * args.batch]
        # Dataset + collate: the rows one by one, stacked, float16 → float32; the model's (C, B, d).
        x = torch.from_numpy(np.stack([rows[int(r)] for r in batch]).astype(np.float32))
        x = x.permute(1, 0, 2).contiguous()
        t = targets[torch.from_numpy(batch)]

        aligned = F.normalize(aligner(x), dim=-1)
        loss = (1 - F.cosine_similarity(aligned, t)).mean()
        w = aligner.weights
        orth = e * torch.mean((torch.matmul(w.transpose(-1, -2), w) - eye) ** 2)
        loss = loss + args.orthonormalize * orth
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        value = loss.item()
        if value < min_loss:
            min_loss, since_best = value, 0
        else:
            since_best += 1
        elapsed = time.perf_counter() - t0
        losses.append(value)
        if step >= args.warmup:
            step_seconds.append(elapsed)

    timed = sum(step_seconds)
    s = sorted(step_seconds)
    out = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "images": len(rows),
        "components": c,
        "width": d,
        "clip_width": e,
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "open_seconds": open_seconds,
        "step_seconds": step_seconds,
        "mean_step_seconds": timed / len(step_seconds),
        "median_step_seconds": s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2,
        "images_per_second": args.batch * len(step_seconds) / timed,
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "rss_before_training_kib": rss_before,
        "rss_end_kib": rss_kib(),
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
