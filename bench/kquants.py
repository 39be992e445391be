"""Benchmark: Tailor's numpy K-quant encoders against llama.cpp's C quantizer, same F16 file
(any K-quant file type: --quant q2_k, q3_k_s, q3_k_m, q4_k_s, q4_k_m, q5_k_s, q5_k_m, q6_k).

Writes a llama-architecture F16 GGUF with the shapes of a ~0.6B model (random weights;
default: hidden 1024, FFN 3072, 16 heads / 8 KV heads, vocab 151936, 24 layers: every row
length a multiple of 256, so every matrix gets a K-quant), then, interleaved per thread count:

- llama.cpp: `llama_model_quantize` F16 -> Q4_K_M (reads the F16 file, converts, quantizes,
  writes the GGUF), timed end to end;
- Tailor: for every tensor llama.cpp made Q4_K/Q5_K/Q6_K, read it from the same F16 file
  (memory-mapped), quantize it to the same type, write the blocks to a file, timed end to end.

MB/s = megabytes of F16 source weights per second of wall time; CPU seconds (all threads
of this process, both quantizers run in it) are printed too, as they suffer less when other
work shares the machine. Also checks that our blocks are
byte-identical to llama.cpp's and measures our peak traced memory on the largest tensor.

    .venv/bin/python bench/kquants.py                 # full size (~1.2 GB F16 file)
    .venv/bin/python bench/kquants.py --layers 4      # quicker
    .venv/bin/python bench/kquants.py --threads 1 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.export import kquants  # noqa: E402
from engine.export.kquants_llamacpp import (  # noqa: E402
    FTYPE_MOSTLY_F16,
    FTYPE_Q4_K_M,
    FTYPE_Q5_K_M,
    FTYPE_Q6_K,
    LlamaShape,
    llama_cpp_quantize,
    read_tensor_blocks,
    write_llama_gguf,
)

ENCODERS = {"Q2_K": kquants.quantize_q2_k, "Q3_K": kquants.quantize_q3_k,
            "Q4_K": kquants.quantize_q4_k, "Q5_K": kquants.quantize_q5_k,
            "Q6_K": kquants.quantize_q6_k}
# llama_ftype of Q2_K / Q3_K_S / Q3_K_M / Q4_K_S / Q5_K_S (llama.h)
FTYPES = {"q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q4_k_s": 14, "q5_k_s": 16,
          "q4_k_m": FTYPE_Q4_K_M, "q5_k_m": FTYPE_Q5_K_M, "q6_k": FTYPE_Q6_K}


def random_f16_weights(shape: LlamaShape, seed: int) -> dict[str, np.ndarray]:
    """Gaussian weights (std 0.02) with a few outlier columns, as trained matrices have."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, rows_cols in shape.matrix_shapes().items():
        w = rng.standard_normal(rows_cols, dtype=np.float32)
        w *= 0.02
        w[:, rng.integers(rows_cols[1], size=4)] *= 8
        out[name] = w.astype(np.float16)
    return out


def run_ours(source: Path, types: dict[str, str], target: Path, threads: int):
    """Quantize every K-typed tensor of `source` like llama.cpp did.

    -> (wall s, CPU s, {type: [s, bytes]}). gguf-py's reader parses the 151936-token vocab
    in Python for seconds; that parse is not ours to time (the export reads safetensors),
    so the clock starts with the tensor table open (tensor data is still read lazily)."""
    import gguf

    per_type: dict[str, list[float]] = {}
    reader = gguf.GGUFReader(str(source))
    cpu_start = time.process_time()
    start = time.perf_counter()
    with open(target, "wb") as out:
        for tensor in reader.tensors:
            type_name = types.get(tensor.name)
            if type_name not in ENCODERS:
                continue
            t0 = time.perf_counter()
            blocks = ENCODERS[type_name](tensor.data, threads=threads)
            out.write(memoryview(blocks))
            seconds_bytes = per_type.setdefault(type_name, [0.0, 0])
            seconds_bytes[0] += time.perf_counter() - t0
            seconds_bytes[1] += tensor.data.nbytes
    return time.perf_counter() - start, time.process_time() - cpu_start, per_type


def compare_blocks(ours_path: Path, theirs: dict, types: dict[str, str], source: Path):
    """(identical blocks, total blocks) between our raw block file and llama.cpp's GGUF."""
    import gguf

    ours = np.fromfile(ours_path, dtype=np.uint8)
    offset = same = total = 0
    for tensor in gguf.GGUFReader(str(source)).tensors:
        type_name = types.get(tensor.name)
        if type_name not in ENCODERS:
            continue
        data = theirs[tensor.name][1].reshape(-1)
        block_bytes = kquants.BLOCK_BYTES[type_name]
        mine = ours[offset:offset + data.size]
        offset += data.size
        equal = (mine.reshape(-1, block_bytes) == data.reshape(-1, block_bytes)).all(axis=1)
        same += int(equal.sum())
        total += equal.size
    return same, total


def peak_memory(source: Path, types: dict[str, str]) -> dict:
    """Peak traced allocation while quantizing the largest K-typed tensor (threads=1)."""
    import gguf

    tensors = [t for t in gguf.GGUFReader(str(source)).tensors if types.get(t.name) in ENCODERS]
    largest = max(tensors, key=lambda t: t.data.nbytes)
    tracemalloc.start()
    blocks = ENCODERS[types[largest.name]](largest.data, threads=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"tensor": largest.name, "type": types[largest.name],
            "shape": list(largest.data.shape), "f16_mb": largest.data.nbytes / 1e6,
            "f32_mb": largest.data.nbytes * 2 / 1e6, "output_mb": blocks.nbytes / 1e6,
            "peak_traced_mb": peak / 1e6}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=3072)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--quant", choices=sorted(FTYPES), default="q4_k_m")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for the GGUF files (default: a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    shape = LlamaShape(n_layers=args.layers, hidden=args.hidden, ffn=args.ffn,
                       n_heads=args.heads, n_kv_heads=args.kv_heads, vocab=args.vocab)
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        folder = Path(folder)
        source = folder / "model-f16.gguf"
        weights = random_f16_weights(shape, seed=0)
        n_params = sum(w.size for w in weights.values())
        write_llama_gguf(source, shape, weights, ftype=FTYPE_MOSTLY_F16)
        del weights
        print(f"model: {args.layers} layers, hidden {args.hidden}, ffn {args.ffn}, vocab "
              f"{args.vocab}: {n_params / 1e6:.0f}M params, F16 file "
              f"{source.stat().st_size / 1e6:.0f} MB; target {args.quant.upper()}; "
              f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")

        results = {"params": n_params, "quant": args.quant, "runs": []}
        theirs = types = None
        for threads in args.threads:
            theirs_path = folder / f"llama-cpp-{threads}.gguf"
            cpu0, t0 = time.process_time(), time.perf_counter()
            llama_cpp_quantize(source, theirs_path, FTYPES[args.quant], nthread=threads)
            c_seconds, c_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            if theirs is None:
                theirs = read_tensor_blocks(theirs_path)
                types = {name: type_name for name, (type_name, _) in theirs.items()}
                k_bytes = sum(
                    2 * int(np.prod(shape.matrix_shapes()[name]))
                    for name, t in types.items() if t in ENCODERS)
            ours_path = folder / f"tailor-{threads}.bin"
            our_seconds, our_cpu, per_type = run_ours(source, types, ours_path, threads)
            same, total = compare_blocks(ours_path, theirs, types, source)
            theirs_path.unlink()
            ours_path.unlink()
            run = {
                "threads": threads,
                "llama_cpp_s": c_seconds, "llama_cpp_cpu_s": c_cpu,
                "llama_cpp_mb_s": k_bytes / c_seconds / 1e6,
                "tailor_s": our_seconds, "tailor_cpu_s": our_cpu,
                "tailor_mb_s": k_bytes / our_seconds / 1e6,
                "ratio_tailor_over_llama_cpp_speed": c_seconds / our_seconds,
                "ratio_tailor_over_llama_cpp_cpu_efficiency": c_cpu / our_cpu,
                "tailor_per_type_mb_s": {t: b / s / 1e6 for t, (s, b) in per_type.items()},
                "identical_blocks": same, "total_blocks": total,
            }
            results["runs"].append(run)
            per_type_text = ", ".join(f"{t} {v:.1f}" for t, v in
                                      sorted(run["tailor_per_type_mb_s"].items()))
            print(f"threads={threads}: llama.cpp {c_seconds:6.2f} s {run['llama_cpp_mb_s']:6.1f}"
                  f" MB/s | Tailor {our_seconds:6.2f} s {run['tailor_mb_s']:6.1f} MB/s "
                  f"({per_type_text}) | Tailor speed / llama.cpp speed = "
                  f"{run['ratio_tailor_over_llama_cpp_speed']:.2f} | identical blocks "
                  f"{same}/{total} | CPU seconds: llama.cpp {c_cpu:.2f}, Tailor {our_cpu:.2f}"
                  f" (ratio {c_cpu / our_cpu:.2f}) | load {os.getloadavg()[0]:.2f}")

        memory = peak_memory(source, types)
        results["memory"] = memory
        print(f"memory: {memory['tensor']} {memory['type']} {memory['shape']}: peak traced "
              f"{memory['peak_traced_mb']:.0f} MB (output itself {memory['output_mb']:.0f} MB) "
              f"for a tensor of {memory['f16_mb']:.0f} MB F16 / {memory['f32_mb']:.0f} MB F32")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
