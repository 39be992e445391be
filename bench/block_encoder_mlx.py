"""Benchmark: would MLX make the 32-value block encoders faster? Q4_1 of one 896x4864 float16
matrix (a llama04 ffn_gate) four ways, side by side in one process (CPU time of all threads;
Tailor's and llama.cpp's encoders run on one):

- numpy: Tailor's encoder (engine/export/block_quants.py), float16 in;
- llama.cpp: `ggml_quantize_chunk` on the float32 matrix (converted beforehand, as
  `llama_model_quantize` hands it over);
- MLX eager: the same arithmetic as MLX ops on the default device (reductions, then the
  levels and nibble packing), blocks [n, 32], the fp16 scales and quants copied out;
- MLX compiled: the levels and packing under `mx.compile` (on an x86-64 CPU, MLX builds the
  fused kernel with g++ -O3 and no -march: no FMA instructions, so no contraction).

Each prints CPU ms (best of --repeats, every thread of the process counted) and whether its
bytes equal llama.cpp's. This is the experiment behind issue 21's note: on this Linux CPU
MLX is slower than the numpy encoder, so the encoders stay numpy here. On a Mac the default
device is the GPU; the byte identity of Metal's arithmetic there is not measured (no Mac),
which is why no MLX path ships.

    .venv/bin/python bench/block_encoder_mlx.py
    .venv/bin/python bench/block_encoder_mlx.py --repeats 15
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _levels(x, low, inverse):
    """The C loop's MIN(15, (int8_t)((x - min) * id + 0.5f)), two nibbles a byte."""
    import mlx.core as mx

    q = mx.minimum(((x - low) * inverse + 0.5).astype(mx.int8), 15).astype(mx.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def mlx_q4_1(w16: np.ndarray, levels) -> np.ndarray:
    """Q4_1 blocks by MLX ops -> uint8 [rows, cols // 32 * 20] (no -0.0 min fix-up: the
    random matrix has no zero minimum)."""
    import mlx.core as mx

    x = mx.array(w16).reshape(-1, 32).astype(mx.float32)
    low, high = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
    d = (high - low) / 15.0
    inverse = mx.where(d != 0, 1.0 / d, 0.0)
    qs = levels(x, low, inverse)
    d16, low16 = d.astype(mx.float16), low.astype(mx.float16)
    mx.eval(qs, d16, low16)
    n = x.shape[0]
    out = np.empty((n, 20), np.uint8)
    out[:, 0:2] = np.asarray(d16).view(np.uint8).reshape(n, 2)
    out[:, 2:4] = np.asarray(low16).view(np.uint8).reshape(n, 2)
    out[:, 4:] = np.asarray(qs)
    return out.reshape(w16.shape[0], -1)


def best_cpu_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        best = min(best, time.process_time() - c0)
    return best * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    import mlx.core as mx

    from engine.export.block_quants import quantize_q4_1
    from engine.export.kquants_llamacpp import llama_cpp_quantize_rows

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((896, 4864), dtype=np.float32) * 0.02).astype(np.float16)
    w32 = w.astype(np.float32)
    theirs = llama_cpp_quantize_rows(w32, "Q4_1")
    compiled = mx.compile(_levels)
    ways = {"numpy (Tailor)": lambda: quantize_q4_1(w),
            "llama.cpp": lambda: llama_cpp_quantize_rows(w32, "Q4_1"),
            "MLX eager": lambda: mlx_q4_1(w, _levels),
            "MLX compiled": lambda: mlx_q4_1(w, compiled)}
    print(f"Q4_1, {w.shape[0]}x{w.shape[1]} float16, MLX {mx.__version__} on "
          f"{mx.default_device()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'way':<16}{'CPU ms':>9}  identical to llama.cpp")
    for name, fn in ways.items():
        same = np.array_equal(fn().reshape(theirs.shape), theirs)
        print(f"{name:<16}{best_cpu_ms(fn, args.repeats):>9.1f}  {same}")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
