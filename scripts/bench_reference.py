#!/usr/bin/env python3
"""Reference CPU throughput of open_clip (and of NumPy TextSpan), for comparison with Refract's benchmark.

Developer tool (CI and users never run it). The Swift benchmark executable runs
it, when a Python with torch + open_clip is available, to measure the reference
in the same session:

    python scripts/bench_reference.py --threads 2 --json [--quick] [--only ID,ID,...]

Models are built with random weights and no download
(`open_clip.create_model(name, pretrained=None)`), float32, `eval()`, under
`torch.inference_mode()`, on the CPU. Inputs are already-preprocessed tensors:
image cases time `model.encode_image(x)` on a [batch, 3, 224, 224] tensor; text
cases time `model.encode_text(ids)` on 100 tokenised prompts "a photo of a
{class}." (batch 100; open_clip always runs all 77 positions). Tokenisation is
timed separately (`tokenize_median_s`) and is not part of the text throughput.

Case ids (default: all):
    vit-b-16-b1   ViT-B-16 image tower, batch 1
    vit-b-16-b8   ViT-B-16 image tower, batch 8
    vit-l-14-b1   ViT-L-14 image tower, batch 1
    vit-l-14-b8   ViT-L-14 image tower, batch 8
    text-b-16     ViT-B-16 text tower (width 512, 12 layers), 100 prompts
    text-l-14     ViT-L-14 text tower (width 768, 12 layers), 100 prompts
    decompose-official-vit-b-16-b8
                  ViT-B-16 image tower, batch 8, decomposed the way the official
                  research code of Gandelsman et al. (ICLR 2024) does it (see below)
    timm-deit-b-16-b8, timm-dinov2-b-14-518-b2, timm-swin-b-224-b8, timm-maxvit-s-224-b8
                  timm models (random weights, `timm.create_model(name, pretrained=False)`),
                  `forward_head(forward_features(x), pre_logits=True)` on [batch, 3, S, S]
                  at the model's input size (DINOv2: 518)
    textspan-numpy
                  TextSpan (Gandelsman et al., Algorithm 1, with the official code's
                  span projection) in plain NumPy float32 on one head, C [10000, 512],
                  R [3498, 512], 20 steps, rank 80 (see below). Needs numpy only:
                  torch and open_clip are imported only when another case is selected.

The decomposition case times, per call, what the official code's `prs_hook`
(`hook_prs_logger(..., spatial=False)`, method "head_no_spatial") does to get
per-head contributions: a forward pass of the image tower whose every attention
block computes per-head outputs for EVERY query token explicitly (q/k/v from the
packed in-projection, attention probabilities [B,H,T,T] by softmax, then
`einsum('bhnm,bhmc->bnhc')` with the per-head values and
`einsum('bnhc,dhc->bnhd')` with the per-head slice of the out projection, giving
[B,T,H,D], + out-proj bias / H; the residual adds their sum over heads), keeping
only the class-token row of each ([B,L,H,D]) plus `ln_pre`'s class row and the
MLP outputs at the class token ([B,L+1,D]); then `ln_post` with the real
statistics of the final class token (mean and sqrt(biased var + eps)), split
evenly over the 2L+1 layer-level terms (and over the H heads of a layer), the
projection applied to all kept components, and division by ||embedding||. Once
per case (untimed) the sum of all components is checked against the L2-normalised
`encode_image` output (`identity_max_abs_err` in the result; the case fails
above 1e-4). Throughput is in images/s as for the image cases.

The TextSpan case runs the algorithm as the official code
(`replace_with_iterative_removal`) does, in NumPy float32 instead of torch:
`np.linalg.svd(C, full_matrices=False)` of the uncentred contributions, the pool
projected with `vh.T @ inv(vh @ vh.T) @ vh` of the top `rank` rows of `vh`, C
centred, then per step the full product D = C @ R.T, `np.std(D, axis=0)`, argmax,
and the deflation of C and R by the chosen row (with the reconstruction
accumulated). Its data are deterministic and identical to what refract-bench
generates (SplitMix64 of the element index, see `splitmix_uniform`):
C[k, j] = (u - 0.5) * exp(-j / 64) + 0.1 * (u' - 0.5), R rows L2-normalised
uniforms, so the chosen indices can be compared (`indices` in the result). One
call = one whole run; throughput is runs/s (= 1 / median_s). It takes one
warm-up call (each call takes seconds) unless --warmup is given.

Timing: `warmup` untimed calls, then timed calls until at least `min_iters` calls
and `min_seconds` of measured time (capped by `max_iters`). Throughput =
batch / median seconds per call. `--quick`: 1 warm-up, >= 3 calls / >= 1.5 s.
Default: 2 warm-ups, >= 5 calls / >= 10 s. (On 2 cores one text call, 100
prompts x 77 positions, takes ~10-20 s: a --quick run of all cases takes
~5-7 minutes, a default run ~12-15 minutes; the decomposition case takes about
1.5x as long as vit-b-16-b8.)

Numbers are only as good as the machine is quiet: `loadavg_start`/`loadavg_end`
are recorded so a caller can flag runs made while other work was running.

Output with --json: ONE JSON object on stdout (everything else goes to stderr):

    {
      "tool": "bench_reference.py", "schema": 1,
      "python": "3.11.7", "torch": "2.x", "open_clip": "3.x", "numpy": "2.x",
      "threads": 2,                 # torch.get_num_threads() after --threads
      "interop_threads": 2,         # torch.get_num_threads_interop()
      "cpu_capability": "AVX2",     # torch.backends.cpu.get_cpu_capability()
      "cpu_model": "...", "cpu_count": 2, "platform": "Linux-...",
      "mkldnn": true, "quick": false, "dtype": "float32", "device": "cpu",
      "loadavg_start": [1.0, 0.8, 0.5], "loadavg_end": [...],
      "results": {
        "vit-b-16-b1": {
          "model": "ViT-B-16", "tower": "image", "batch": 1, "input": [1, 3, 224, 224],
          "unit": "images/s", "throughput": 12.3,       # batch / median_s
          "median_s": 0.081, "mean_s": 0.082, "min_s": 0.079, "max_s": 0.09,
          "p10_s": ..., "p90_s": ..., "iters": 10, "warmup": 3,
          "build_s": 1.9                                 # model creation time (not timed)
        },
        "text-b-16": {..., "tower": "text", "batch": 100, "input": [100, 77],
                      "unit": "prompts/s", "tokenize_median_s": 0.004, ...},
        "decompose-official-vit-b-16-b8": {..., "tower": "image", "batch": 8,
                      "method": "decompose-official", "unit": "images/s",
                      "components": {"attn": [8, 12, 12, 512], "mlp": [8, 13, 512]},
                      "identity_max_abs_err": 1e-7, ...},
        "textspan-numpy": {"model": "numpy", "tower": "textspan", "batch": 1,
                      "method": "textspan-numpy", "unit": "runs/s",
                      "input": {"contributions": [10000, 512], "texts": [3498, 512]},
                      "steps": 20, "rank": 80, "indices": [...], "median_s": 9.1, ...}
      },
      "errors": {"case-id": "message"}                  # only cases that failed
    }

With only numpy cases selected, the torch fields ("torch", "open_clip",
"interop_threads", "cpu_capability", "mkldnn") are absent and "threads" is the
--threads value (OPENBLAS_NUM_THREADS/OMP_NUM_THREADS for NumPy's BLAS), or null.
"numpy_blas" names NumPy's BLAS when NumPy reports it.

Exit status: 0 if every selected case ran, 1 if any failed, 2 on bad arguments,
3 if numpy (or, for the open_clip cases, torch/open_clip) cannot be imported
(nothing on stdout then).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time

CASES = {
    "vit-b-16-b1": ("ViT-B-16", "image", 1),
    "vit-b-16-b8": ("ViT-B-16", "image", 8),
    "vit-l-14-b1": ("ViT-L-14", "image", 1),
    "vit-l-14-b8": ("ViT-L-14", "image", 8),
    "text-b-16": ("ViT-B-16", "text", 100),
    "text-l-14": ("ViT-L-14", "text", 100),
    "decompose-official-vit-b-16-b8": ("ViT-B-16", "decompose", 8),
    "textspan-numpy": ("numpy", "textspan", 1),
    "timm-deit-b-16-b8": ("deit_base_patch16_224", "timm", 8),
    "timm-dinov2-b-14-518-b2": ("vit_base_patch14_dinov2", "timm", 2),
    "timm-swin-b-224-b8": ("swin_base_patch4_window7_224", "timm", 8),
    "timm-maxvit-s-224-b8": ("maxvit_small_tf_224", "timm", 8),
}

# textspan-numpy: one ViT-B-sized head (D' = 512) over 10000 images, the paper's pool size and settings.
TEXTSPAN = {"images": 10000, "width": 512, "pool": 3498, "steps": 20, "rank": 80}

CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    "apple", "aquarium fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn mower", "leopard", "lion", "lizard", "lobster", "man", "maple tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak tree", "orange", "orchid", "otter", "palm tree", "pear", "pickup truck", "pine tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
]
assert len(CLASSES) == 100


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def percentile(xs, q):
    s = sorted(xs)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def time_calls(fn, warmup, min_iters, min_seconds, max_iters):
    for _ in range(warmup):
        fn()
    times = []
    total = 0.0
    while len(times) < max_iters and (len(times) < min_iters or total < min_seconds):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
    return times


def summarize(times, batch):
    med = statistics.median(times)
    return {
        "throughput": batch / med,
        "median_s": med,
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "p10_s": percentile(times, 0.10),
        "p90_s": percentile(times, 0.90),
        "iters": len(times),
    }


def official_decompose(model, x):
    """Per-head direct effects of an open_clip ViT, the official research code's way.

    Follows the official `prs_hook` with `spatial=False` ("head_no_spatial"): every
    attention block materialises per-head outputs for every query token, [B, T, H, D]
    (+ out-proj bias / H), of which the class-token row is kept; `pre` (= ln_pre's class
    row) and the MLP outputs at the class token are kept as [B, L+1, D]. ln_post is
    applied with the real statistics of the final class token, its mean and bias split
    evenly over the 2L+1 layer terms (and the H heads of a layer), then the projection,
    and everything is divided by ||embedding||. Returns (attn [B, L, H, D'], mlp [B, L+1, D']),
    which sum to the L2-normalised image embedding.
    """
    import torch
    import torch.nn.functional as F

    v = model.visual
    p = v.conv1(x)
    p = p.reshape(p.shape[0], p.shape[1], -1).permute(0, 2, 1)             # [B, g*g, D]
    B, _, D = p.shape
    h = torch.cat([v.class_embedding.to(p.dtype).expand(B, 1, D), p], dim=1) + v.positional_embedding
    h = v.ln_pre(h)                                                           # [B, T, D]
    T = h.shape[1]
    mlps = [h[:, 0]]
    attns = []
    for blk in v.transformer.resblocks:
        mha = blk.attn
        H = mha.num_heads
        d = D // H
        y = blk.ln_1(h)
        qkv = F.linear(y, mha.in_proj_weight, mha.in_proj_bias).view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)
        q, k, val = qkv[0], qkv[1], qkv[2]                                   # [B, H, T, d]
        probs = torch.softmax((q * d ** -0.5) @ k.transpose(-1, -2), dim=-1)  # [B, H, T, T]
        z = torch.einsum("bhnm,bhmc->bnhc", probs, val)                      # [B, T, H, d]
        heads = torch.einsum("bnhc,dhc->bnhd", z, mha.out_proj.weight.view(D, H, d))
        heads = heads + mha.out_proj.bias / H                                # [B, T, H, D]
        attns.append(heads[:, 0])
        h = h + blk.ls_1(heads.sum(2))
        m = blk.ls_2(blk.mlp(blk.ln_2(h)))
        mlps.append(m[:, 0])
        h = h + m
    attns = torch.stack(attns, 1)                                             # [B, L, H, D]
    mlps = torch.stack(mlps, 1)                                               # [B, L+1, D]
    xl = h[:, 0]
    ln = v.ln_post
    mean = xl.mean(-1)
    std = torch.sqrt(xl.var(-1, unbiased=False) + ln.eps)
    K = attns.shape[1] + mlps.shape[1]                                        # 2L + 1
    Hn = attns.shape[2]
    mlps = (ln.weight * (mlps - mean[:, None, None] / K) / std[:, None, None] + ln.bias / K) @ v.proj
    attns = (ln.weight * (attns - mean[:, None, None, None] / (K * Hn)) / std[:, None, None, None]
             + ln.bias / (K * Hn)) @ v.proj
    norm = (F.layer_norm(xl, ln.normalized_shape, ln.weight, ln.bias, ln.eps) @ v.proj).norm(dim=-1)
    return attns / norm[:, None, None, None], mlps / norm[:, None, None]


def splitmix_uniform(np, n, stream):
    """n float32 uniforms in [-0.5, 0.5): SplitMix64 of (stream, index), top 24 bits.

    Element i (0-based) is z = stream * 0xD1B54A32D192ED03 + (i + 1) * 0x9E3779B97F4A7C15
    (mod 2^64) through SplitMix64's finaliser; u = (z >> 40) / 2^24 - 0.5, exact in float32.
    refract-bench (TextSpanBench.swift) generates the same numbers.
    """
    seed = np.uint64((stream * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
    z = seed + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / (1 << 24)) - np.float32(0.5)


def textspan_data(np, images, width, pool):
    """C [images, width] with decaying column scales and an offset; R [pool, width], unit rows."""
    scale = np.exp(-np.arange(width, dtype=np.float64) / 64.0).astype(np.float32)
    offset = np.float32(0.1) * splitmix_uniform(np, width, 3)
    c = splitmix_uniform(np, images * width, 1).reshape(images, width) * scale[None, :] + offset[None, :]
    r = splitmix_uniform(np, pool * width, 2).reshape(pool, width)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    return c.astype(np.float32), r.astype(np.float32)


def textspan_numpy(np, data, text_features, iters, rank):
    """TextSpan as the official code's `replace_with_iterative_removal` runs it, in NumPy float32.

    Returns (reconstruction [K, D'], chosen indices).
    """
    _, _, vh = np.linalg.svd(data, full_matrices=False)
    vh = vh[:rank]
    text_features = vh.T.dot(np.linalg.inv(vh.dot(vh.T)).dot(vh)).dot(text_features.T).T  # span of the head
    mean_data = data.mean(axis=0, keepdims=True)
    data = data - mean_data
    reconstruct = np.repeat(mean_data, data.shape[0], axis=0)
    results = []
    for _ in range(iters):
        projection = data @ text_features.T                                    # [K, M]
        projection_std = projection.std(axis=0)
        top_n = int(np.argmax(projection_std))
        results.append(top_n)
        u = text_features[top_n]
        text_norm = u @ u.T
        coef = data @ u / text_norm                                           # [K]
        reconstruct += coef[:, np.newaxis] * u[np.newaxis, :]
        data = data - coef[:, np.newaxis] * u[np.newaxis, :]
        text_features = text_features - (text_features @ u / text_norm)[:, np.newaxis] * u[np.newaxis, :]
    return reconstruct, results


def bench_textspan(np, args):
    k, d, m = TEXTSPAN["images"], TEXTSPAN["width"], TEXTSPAN["pool"]
    steps, rank = TEXTSPAN["steps"], TEXTSPAN["rank"]
    t0 = time.perf_counter()
    c, r = textspan_data(np, k, d, m)
    build_s = time.perf_counter() - t0
    _, indices = textspan_numpy(np, c, r, steps, rank)
    warmup = args.warmup if args.warmup_given else 1
    log("[bench_reference] textspan-numpy: timing")
    times = time_calls(lambda: textspan_numpy(np, c, r, steps, rank), max(0, warmup - 1),
                       args.min_iters, args.seconds, args.max_iters)
    return {"model": "numpy", "tower": "textspan", "batch": 1, "method": "textspan-numpy", "unit": "runs/s",
            "input": {"contributions": [k, d], "texts": [m, d]}, "steps": steps, "rank": rank,
            "dtype": str(c.dtype), "indices": indices, **summarize(times, 1), "warmup": warmup,
            "build_s": build_s}


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="open_clip CPU reference throughput (random weights, float32).",
        epilog="Case ids: " + ", ".join(CASES),
    )
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads(N) (default: torch's default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="short run: 1 warm-up, >=3 calls, >=1.5 s per case")
    ap.add_argument("--only", default="", help="comma-separated case ids (default: all)")
    ap.add_argument("--seconds", type=float, default=None, help="minimum measured seconds per case")
    ap.add_argument("--min-iters", type=int, default=None, help="minimum timed calls per case")
    ap.add_argument("--max-iters", type=int, default=1000, help="maximum timed calls per case")
    ap.add_argument("--warmup", type=int, default=None, help="untimed warm-up calls per case")
    ap.add_argument("--list", action="store_true", help="list case ids and exit")
    args = ap.parse_args(argv)
    if args.list:
        for k, (m, t, b) in CASES.items():
            what = ("image tower, official per-head decomposition" if t == "decompose"
                    else "TextSpan in NumPy (one head)" if t == "textspan" else f"{t} tower")
            print(f"{k:12s} {m} {what}, batch {b}")
        sys.exit(0)
    ids = [s.strip().lower() for s in args.only.split(",") if s.strip()] or list(CASES)
    bad = [s for s in ids if s not in CASES]
    if bad:
        ap.error(f"unknown case id(s): {', '.join(bad)} (known: {', '.join(CASES)})")
    args.ids = list(dict.fromkeys(ids))
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    args.warmup_given = args.warmup is not None
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.min_iters = args.min_iters if args.min_iters is not None else (3 if args.quick else 5)
    args.seconds = args.seconds if args.seconds is not None else (1.5 if args.quick else 10.0)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)

    if args.threads is not None:
        # before importing torch too, so that OpenMP/MKL pools start with this size
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ[var] = str(args.threads)

    numpy_ids = [cid for cid in args.ids if CASES[cid][1] == "textspan"]
    torch_ids = [cid for cid in args.ids if CASES[cid][1] != "textspan"]
    torch = open_clip = timm = None
    try:
        import numpy as np
        if torch_ids:
            import torch
            import open_clip
        if any(CASES[cid][1] == "timm" for cid in torch_ids):
            import timm
    except ImportError as e:
        log(f"[bench_reference] cannot import the reference stack: {e}")
        return 3

    if torch is not None:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
            try:
                torch.set_num_interop_threads(args.threads)
            except RuntimeError:
                pass
        torch.manual_seed(0)
        stack = {
            "torch": torch.__version__,
            "open_clip": getattr(open_clip, "__version__", "unknown"),
            **({"timm": timm.__version__} if timm is not None else {}),
            "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn": bool(torch.backends.mkldnn.is_available()),
        }
    else:
        stack = {"threads": args.threads}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        stack["numpy_blas"] = f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001  (older NumPy: no dict mode)
        pass

    out = {
        "tool": "bench_reference.py",
        "schema": 1,
        "python": platform.python_version(),
        "numpy": np.__version__,
        **stack,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "quick": bool(args.quick),
        "dtype": "float32",
        "device": "cpu",
        "timing": {"warmup": args.warmup, "min_iters": args.min_iters,
                   "min_seconds": args.seconds, "max_iters": args.max_iters},
        "loadavg_start": loadavg(),
        "results": {},
        "errors": {},
    }

    for cid in numpy_ids:
        try:
            res = bench_textspan(np, args)
            out["results"][cid] = res
            log(f"[bench_reference] {cid}: {res['median_s']:.3f} s per run "
                f"(median over {res['iters']} calls; indices {res['indices'][:5]}...)")
        except Exception as e:  # noqa: BLE001
            out["errors"][cid] = f"{type(e).__name__}: {e}"

    tokenizer = open_clip.get_tokenizer("ViT-B-16") if torch_ids else None  # built-in CLIP BPE, no download
    prompts = [f"a photo of a {c}." for c in CLASSES]

    # group by model so each model is built once
    by_model = {}
    for cid in torch_ids:
        by_model.setdefault(CASES[cid][0], []).append(cid)

    for model_name, cids in by_model.items():
        model = None
        try:
            log(f"[bench_reference] building {model_name} (random weights)")
            t0 = time.perf_counter()
            if CASES[cids[0]][1] == "timm":
                model = timm.create_model(model_name, pretrained=False)
            else:
                model = open_clip.create_model(model_name, pretrained=None, precision="fp32", device="cpu")
            model.eval()
            build_s = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            for cid in cids:
                out["errors"][cid] = f"model build failed: {type(e).__name__}: {e}"
            continue

        for cid in cids:
            _, tower, batch = CASES[cid]
            try:
                with torch.inference_mode():
                    if tower == "timm":
                        size = model.pretrained_cfg["input_size"][1:]
                        x = torch.randn(batch, 3, *size, dtype=torch.float32)
                        if model_name.startswith("maxvit"):
                            # the representation decomposed: the last stage's spatial mean
                            fn = lambda: model.forward_features(x).mean((-1, -2))  # noqa: E731
                        else:
                            fn = lambda: model.forward_head(model.forward_features(x), pre_logits=True)  # noqa: E731
                        extra = {"input": list(x.shape), "unit": "images/s"}
                    elif tower == "image":
                        size = model.visual.image_size
                        size = size if isinstance(size, (tuple, list)) else (size, size)
                        x = torch.randn(batch, 3, *size, dtype=torch.float32)
                        fn = lambda: model.encode_image(x)  # noqa: E731
                        extra = {"input": list(x.shape), "unit": "images/s"}
                    elif tower == "decompose":
                        size = model.visual.image_size
                        size = size if isinstance(size, (tuple, list)) else (size, size)
                        x = torch.randn(batch, 3, *size, dtype=torch.float32)
                        attns, mlps = official_decompose(model, x)
                        ref = torch.nn.functional.normalize(model.encode_image(x), dim=-1)
                        err = (attns.sum((1, 2)) + mlps.sum(1) - ref).abs().max().item()
                        if not err < 1e-4:
                            raise RuntimeError(f"decomposition does not sum to the embedding (max |err| {err:g})")
                        fn = lambda: official_decompose(model, x)  # noqa: E731
                        extra = {"tower": "image", "method": "decompose-official", "input": list(x.shape),
                                 "unit": "images/s",
                                 "components": {"attn": list(attns.shape), "mlp": list(mlps.shape)},
                                 "identity_max_abs_err": err}
                    else:
                        ids = tokenizer(prompts)
                        tok_times = time_calls(lambda: tokenizer(prompts), 1, 5, 0.0, 5)
                        fn = lambda: model.encode_text(ids)  # noqa: E731
                        extra = {"input": list(ids.shape), "unit": "prompts/s",
                                 "tokenize_median_s": statistics.median(tok_times)}
                    log(f"[bench_reference] {cid}: timing")
                    times = time_calls(fn, args.warmup, args.min_iters, args.seconds, args.max_iters)
                res = {"model": model_name, "tower": tower, "batch": batch, **extra,
                       **summarize(times, batch), "warmup": args.warmup, "build_s": build_s}
                out["results"][cid] = res
                log(f"[bench_reference] {cid}: {res['throughput']:.2f} {res['unit']} "
                    f"(median {res['median_s'] * 1e3:.1f} ms over {res['iters']} calls)")
            except Exception as e:  # noqa: BLE001
                out["errors"][cid] = f"{type(e).__name__}: {e}"
        del model
        gc.collect()

    out["loadavg_end"] = loadavg()

    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        print(f"torch {out.get('torch', '-')}  open_clip {out.get('open_clip', '-')}  numpy {out['numpy']}  "
              f"threads {out['threads']}  cpu {out.get('cpu_capability', '-')} ({out['cpu_model']})")
        for cid, r in out["results"].items():
            print(f"{cid:12s} {r['throughput']:10.2f} {r['unit']:9s}  median {r['median_s'] * 1e3:9.2f} ms  "
                  f"[{r['min_s'] * 1e3:.2f} .. {r['max_s'] * 1e3:.2f}] x{r['iters']}")
        for cid, msg in out["errors"].items():
            print(f"{cid:12s} ERROR {msg}")
    return 1 if out["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
