"""Importance-weighted encoders against llama.cpp's, one thread, same matrix and weights.

For each type that takes an importance matrix: Tailor's `quantize_weighted` (float16 in, as
an export reads it) and llama.cpp's `ggml_quantize_chunk` with quant_weights (the float32
values), interleaved A/B, best of N by CPU time (time.process_time), bytes compared.
With --shape (bench/export.py's shapes): whole exports too, Tailor from safetensors with a
seeded matrix against llama_model_quantize on Tailor's F16 GGUF with the same matrix, CPU
seconds of each, tensors compared.

    .venv/bin/python bench/imatrix_encoders.py [--rows 512 --cols 4864 --repeat 3]
    .venv/bin/python bench/imatrix_encoders.py --shape llama04 --layers 4 --quants q4_k_m q2_k
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


def seeded_matrix(model: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A positive importance row per input column of every matrix the export quantizes."""
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.write import plan_tensors
    from engine.models.load import read_config

    rng = np.random.default_rng(seed)
    planned = plan_tensors(arch_info(read_config(model)), list_tensors(model), "f16")
    return {p.name: rng.gamma(0.5, 2.0, (p.shape[0] if len(p.shape) == 3 else 1) * p.shape[-1]
                              ).astype(np.float32)
            for p in planned if len(p.shape) >= 2 and p.name != "token_embd.weight"}


def bench_exports(shape: str, layers: int, quants: list[str], work: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from export import compare, write_model

    from engine.export.gguf_export import export_gguf
    from engine.export.kquants_llamacpp import llama_cpp_quantize
    from engine.export.quant_types import QUANT_BY_NAME

    model = work / shape
    write_model(model, layers, shape=shape)
    matrix = seeded_matrix(model)
    export_gguf(model, work / "f16.gguf", "f16", verify=False)
    print(f"{shape} {layers} layers, {len(matrix)} matrix entries; CPU seconds (wall)")
    for quant in quants:
        c0, t0 = time.process_time(), time.time()
        export_gguf(model, work / f"{quant}.gguf", quant, verify=False, imatrix=matrix)
        c1, t1 = time.process_time(), time.time()
        llama_cpp_quantize(work / "f16.gguf", work / f"{quant}-llama.gguf",
                           QUANT_BY_NAME[quant].ftype, nthread=os.cpu_count() or 1,
                           imatrix=matrix)
        c2, t2 = time.process_time(), time.time()
        same, total, _ = compare(work / f"{quant}.gguf", work / f"{quant}-llama.gguf")
        print(f"  {quant:7} tailor {c1 - c0:6.2f} ({t1 - t0:5.2f})  llama.cpp {c2 - c1:6.2f} "
              f"({t2 - t1:5.2f})  ratio {(c1 - c0) / (c2 - c1):4.2f}  identical {same}/{total}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=4864)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--types", nargs="*", default=sorted(WEIGHTED_TYPES))
    ap.add_argument("--shape", default=None, help="also whole exports of this bench/export.py "
                    "shape (qwen05, llama04)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--quants", nargs="*", default=["q4_k_m", "q2_k", "q3_k_m", "iq4_xs"])
    args = ap.parse_args()
    if args.shape:
        import tempfile

        with tempfile.TemporaryDirectory() as work:
            bench_exports(args.shape, args.layers, args.quants, Path(work))
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
