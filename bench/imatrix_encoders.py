"""Importance-weighted encoders against llama.cpp's, one thread, same matrix and weights.

For each type that takes an importance matrix: Tailor's `quantize_weighted` (float16 in, as
an export reads it) and llama.cpp's `ggml_quantize_chunk` with quant_weights (the float32
values), interleaved A/B, best of N by CPU time (time.process_time), bytes compared.

    .venv/bin/python bench/imatrix_encoders.py [--rows 512 --cols 4864 --repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from engine.export.imatrix_quants import WEIGHTED_TYPES, quantize_weighted  # noqa: E402
from engine.export.kquants_llamacpp import llama_cpp_quantize_rows  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=4864)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", nargs="*", default=sorted(WEIGHTED_TYPES))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    w16 = (rng.standard_normal((args.rows, args.cols)) * 0.02).astype(np.float16)
    w32 = np.ascontiguousarray(w16.astype(np.float32))
    qw = (rng.gamma(0.5, 2.0, args.cols)).astype(np.float32)
    n = w16.size
    print(f"load average at start {os.getloadavg()}; [{args.rows}, {args.cols}], one thread, "
          f"best of {args.repeat} CPU seconds")
    print(f"{'type':7} {'tailor s':>9} {'llama.cpp s':>11} {'ratio':>6} {'tailor Mv/s':>11} "
          f"{'llama Mv/s':>10} same")
    for t in args.types:
        ours_s, ref_s = [], []
        for _ in range(args.repeat):
            c0 = time.process_time()
            ours = quantize_weighted(w16, t, qw)
            c1 = time.process_time()
            ref = llama_cpp_quantize_rows(w32, t, qw)
            c2 = time.process_time()
            ours_s.append(c1 - c0)
            ref_s.append(c2 - c1)
        a, b = min(ours_s), min(ref_s)
        print(f"{t:7} {a:9.3f} {b:11.3f} {a / b:6.2f} {n / a / 1e6:11.1f} {n / b / 1e6:10.1f} "
              f"{np.array_equal(ours, ref)}")
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
