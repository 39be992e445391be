"""Benchmark: `tailor export` against llama.cpp's own quantizer on the same F16 file, for every
file type asked for, on model shapes whose rows do and do not divide into 256-value blocks;
and each GGML type's encoder alone, ours against llama.cpp's, on the same matrix.

Shapes (random weights written as F16 safetensors shards into a temporary folder):
- qwen05: Qwen2.5-0.5B's config (hidden 896, 24 layers, 14 heads / 2 KV heads, FFN 4864,
  vocab 151936, tied embeddings), with the tiny Qwen BPE tokenizer (the token list is padded
  to the embedding with [PAD{i}] entries, as for any checkpoint whose embedding is larger
  than its vocabulary);
- llama04: a 0.4B llama (hidden 896, FFN 4864, 14 heads / 2 KV heads, a 32k vocabulary,
  untied output), with the tiny Llama 3 tokenizer.
Hidden 896 is not a multiple of 256, so (in llama.cpp as in Tailor) most matrices fall back
(Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0, IQ4_XS -> IQ4_NL); ffn_down
(rows of 4864) keeps its K-quant.

Steps, each in a fresh child process (wall time and peak RSS from getrusage in the child; the
child's RSS after its imports, before any work, is reported as the constant). A large export
encodes in worker processes (engine/export/piece_processes.py): their CPU time is counted
(getrusage of the reaped children), and their work memory as the number of workers times the
largest worker's peak above a worker's own constant (an upper bound: they do not all peak at
once):

1. tailor F16:     export_gguf(folder, F16)   (verify=False: the timing is the conversion)
2. per type X:     export_gguf(folder, X) from the same safetensors, then
                   llama_model_quantize(F16 GGUF of step 1 -> X), and the two files compared
                   tensor by tensor (type and bytes).
3. encoders:       for each GGML type, our encoder and llama.cpp's (`ggml_quantize_chunk`),
                   one thread each, interleaved, best of 5 on the same matrix [512, 4864]:
                   millions of values per CPU second (and per wall second).

CPU seconds are the figures to trust on a shared machine (wall time waits for other jobs);
the load average is printed beside every step.

    .venv/bin/python bench/export.py                              # qwen05, the default ladder
    .venv/bin/python bench/export.py --shape llama04 qwen05 --layers 4 --quants all
    .venv/bin/python bench/export.py --shape llama04 --quants q4_k_m q2_k q3_k_m iq4_xs
    .venv/bin/python bench/export.py --shape llama04 --quants q4_1 --repeats 3   # busy machine
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

QWEN05 = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
          "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 151936,
          "tie_word_embeddings": True, "model_type": "qwen2",
          "architectures": ["Qwen2ForCausalLM"], "rope_theta": 1000000.0,
          "rms_norm_eps": 1e-6, "max_position_embeddings": 32768, "hidden_act": "silu",
          "torch_dtype": "float16"}
LLAMA04 = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "intermediate_size": 4864, "vocab_size": 32000,
           "tie_word_embeddings": False, "model_type": "llama",
           "architectures": ["LlamaForCausalLM"], "rope_theta": 500000.0,
           "rms_norm_eps": 1e-5, "max_position_embeddings": 8192, "hidden_act": "silu",
           "attention_bias": False, "mlp_bias": False, "torch_dtype": "float16"}
SHAPES = {"qwen05": (QWEN05, "qwen2"), "llama04": (LLAMA04, "llama3")}
DEFAULT_QUANTS = ["q4_k_m", "q2_k", "q3_k_m", "iq4_xs"]
# every quantized file type (F16 is step 1; F32/BF16 are no quantizer's work; MXFP4_MOE
# quantizes only experts)
ALL_QUANTS = ["q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_1", "q5_0", "q4_k_m", "q4_k_s", "q4_1",
              "q4_0", "iq4_nl", "iq4_xs", "q3_k_l", "q3_k_m", "q3_k_s", "q2_k"]
ENCODER_TYPES = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "Q5_0", "Q5_1", "Q4_0",
                 "Q4_1", "IQ4_NL", "IQ4_XS"]


def write_model(folder: Path, layers: int, seed: int = 0, shape: str = "qwen05"
                ) -> tuple[int, int]:
    """Random F16 weights in one shard per layer; returns (params, largest tensor bytes)."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine.tiny_models import cached_tiny_model

    base, tokenizer_kind = SHAPES[shape]
    cfg = dict(base, num_hidden_layers=layers)
    biases = cfg["model_type"] == "qwen2"
    folder.mkdir(parents=True)
    tok_src = cached_tiny_model(tokenizer_kind)
    for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(tok_src / f, folder / f)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    rng = np.random.default_rng(seed)
    h, f, kv = cfg["hidden_size"], cfg["intermediate_size"], 2 * 64
    params = largest = 0

    def rand(*shape, std=0.02):
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    shards = [{"model.embed_tokens.weight": rand(cfg["vocab_size"], h),
               "model.norm.weight": (1 + rand(h)).astype(np.float16)}]
    if not cfg["tie_word_embeddings"]:
        shards[0]["lm_head.weight"] = rand(cfg["vocab_size"], h)
    for i in range(layers):
        p = f"model.layers.{i}."
        shards.append({
            p + "input_layernorm.weight": (1 + rand(h)).astype(np.float16),
            p + "post_attention_layernorm.weight": (1 + rand(h)).astype(np.float16),
            p + "self_attn.q_proj.weight": rand(h, h),
            p + "self_attn.k_proj.weight": rand(kv, h),
            p + "self_attn.v_proj.weight": rand(kv, h),
            p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(f, h), p + "mlp.up_proj.weight": rand(f, h),
            p + "mlp.down_proj.weight": rand(h, f)})
        if biases:
            shards[-1].update({p + "self_attn.q_proj.bias": rand(h),
                               p + "self_attn.k_proj.bias": rand(kv),
                               p + "self_attn.v_proj.bias": rand(kv)})
    n = len(shards)
    weight_map = {}
    for k, shard in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        for key, arr in shard.items():
            weight_map[key] = name
            params += arr.size
            largest = max(largest, arr.nbytes)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": params * 2}, "weight_map": weight_map}))
    return params, largest


def _model_size(model: Path) -> tuple[int, int]:
    from engine.export.safetensors_stream import list_tensors

    refs = list_tensors(model)
    params = 0
    for r in refs:
        n = 1
        for d in r.shape:
            n *= d
        params += n
    return params, max(r.nbytes for r in refs)


def _child(step: str, args: dict, q) -> None:
    import os
    import resource

    from engine.export.gguf_export import export_gguf  # noqa: F401 - imports count as constant
    import llama_cpp  # noqa: F401

    import transformers  # noqa: F401
    from engine.export.piece_processes import WorkerProcesses

    probe = WorkerProcesses(1)  # one encoding worker's RSS after its start-up: its constant
    probe.close()
    worker_base = probe.peaks[0][1]

    def cpu_now() -> float:  # this process and its reaped children (the encoding workers)
        return sum(ru.ru_utime + ru.ru_stime for ru in (
            resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))

    ru = resource.getrusage(resource.RUSAGE_SELF)
    base_rss, cpu0 = ru.ru_maxrss * 1024, cpu_now()
    t0 = time.perf_counter()
    if step.startswith("llama.cpp"):
        import ctypes

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = args["ftype"]
        params.nthread = args["threads"] or 0
        saved = os.dup(2)  # llama.cpp logs every tensor to fd 2 directly
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["out"].encode(),
                                                    ctypes.byref(params))
            finally:
                os.dup2(saved, 2)
                os.close(saved)
        assert rc == 0, rc
    else:
        export_gguf(Path(args["src"]), Path(args["out"]), args["quant"], verify=False,
                    threads=args["threads"])
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    # worker processes (the export's, for a large model): each one's work memory at most the
    # largest worker's peak above its constant, all at once (an upper bound)
    workers = (args["threads"] or os.cpu_count() or 1) if step.startswith("tailor") else 0
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    worker_work = workers * max(0, child_peak - worker_base)
    q.put({"step": step, "wall_s": wall, "cpu_s": cpu_now() - cpu0,
           "peak_rss": ru.ru_maxrss * 1024 + worker_work, "base_rss": base_rss,
           "workers_work": worker_work,
           "load_1min": os.getloadavg()[0]})


def run_step(step: str, **args) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(step, args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{step} failed (exit {p.exitcode})")
    return q.get()


def compare(ours: Path, ref: Path) -> tuple[int, int, list[str]]:
    import gguf
    import numpy as np

    a = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(ref)).tensors}
    same, diff = 0, []
    for name in sorted(set(a) | set(b)):
        if name in a and name in b and a[name].tensor_type == b[name].tensor_type and \
                np.array_equal(np.asarray(a[name].data).view(np.uint8),
                               np.asarray(b[name].data).view(np.uint8)):
            same += 1
        else:
            diff.append(name)
    return same, len(set(a) | set(b)), diff


def _compare_child(ours: str, ref: str, q) -> None:
    q.put(compare(Path(ours), Path(ref)))


def compare_in_child(ours: Path, ref: Path) -> tuple[int, int, list[str]]:
    """compare() in a child: reading both files would raise this process's RSS high-water
    mark, which every later child inherits (its 'constant' would then be that mark)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_compare_child, args=(str(ours), str(ref), q))
    p.start()
    result = q.get()
    p.join()
    return result


def encoder_throughput(repeats: int = 5) -> list[dict]:
    """Each GGML type: our encoder and llama.cpp's ggml_quantize_chunk, one thread, best of
    `repeats` (CPU and wall time each), on the same [512, 4864] matrix (rows divide into 256
    and 32)."""
    import numpy as np
    from gguf import GGMLQuantizationType as T

    from engine.export.kquants_llamacpp import llama_cpp_quantize_rows
    from engine.export.mixtures import encode

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((512, 4864), dtype=np.float32) * 0.02).astype(np.float16)
    w32 = w.astype(np.float32)
    rows = []
    for type_name in ENCODER_TYPES:
        best = {"ours": [float("inf")] * 2, "theirs": [float("inf")] * 2}  # CPU, wall
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            theirs = llama_cpp_quantize_rows(w32, type_name)
            c1, t1 = time.process_time(), time.perf_counter()
            ours = encode(w, T[type_name], threads=1)  # float16 in, as the export hands over
            c2, t2 = time.process_time(), time.perf_counter()
            best["theirs"] = [min(best["theirs"][0], c1 - c0), min(best["theirs"][1], t1 - t0)]
            best["ours"] = [min(best["ours"][0], c2 - c1), min(best["ours"][1], t2 - t1)]
        rows.append({"type": type_name, "ours_mvps": w.size / best["ours"][0] / 1e6,
                     "llama_mvps": w.size / best["theirs"][0] / 1e6,
                     "ours_wall_mvps": w.size / best["ours"][1] / 1e6,
                     "llama_wall_mvps": w.size / best["theirs"][1] / 1e6,
                     "identical": bool(np.array_equal(ours.reshape(theirs.shape), theirs))})
    return rows


def _print_steps(res: list[dict], largest: int) -> None:
    print(f"{'step':<22}{'wall s':>9}{'CPU s':>8}{'load':>6}{'peak RSS MB':>13}"
          f"{'constant MB':>13}{'work MB':>10}{'of it workers':>15}{'work/largest':>14}")
    for r in res:
        work_mb = (r["peak_rss"] - r["base_rss"]) / 1e6
        print(f"{r['step']:<22}{r['wall_s']:>9.1f}{r['cpu_s']:>8.2f}{r['load_1min']:>6.1f}"
              f"{r['peak_rss'] / 1e6:>13.0f}{r['base_rss'] / 1e6:>13.0f}{work_mb:>10.0f}"
              f"{r.get('workers_work', 0) / 1e6:>15.0f}{work_mb * 1e6 / largest:>14.2f}")


def _least(best: dict | None, new: dict) -> dict:
    """The figures of repeated runs of one step: least CPU and least wall (each with its own
    load), the largest peak memory."""
    if best is None:
        return new
    out = dict(best) if best["cpu_s"] <= new["cpu_s"] else dict(new)
    out["wall_s"] = min(best["wall_s"], new["wall_s"])
    out["peak_rss"] = max(best["peak_rss"], new["peak_rss"])
    out["workers_work"] = max(best.get("workers_work", 0), new.get("workers_work", 0))
    out["runs"] = best.get("runs", 1) + 1
    return out


def bench_shape(shape: str, work: Path, args) -> dict:
    """Steps 1-2 on one shape -> its figures."""
    from engine.export.quant_types import QUANT_BY_NAME

    model = work / f"{shape}-shaped"
    if not model.exists():
        # In a child: the parent's RSS high-water mark carries over into every child
        # (Linux keeps it across fork+exec), so the parent must stay small.
        ctx = mp.get_context("spawn")
        p = ctx.Process(target=write_model, args=(model, args.layers, 0, shape))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit("writing the model failed")
    params, largest = _model_size(model)
    print(f"\n== {shape}: {params / 1e6:.1f} M parameters ({args.layers} layers), F16 "
          f"safetensors {params * 2 / 1e9:.2f} GB, largest tensor {largest / 1e6:.0f} MB")
    f16 = work / f"{shape}-f16.gguf"
    for f in work.glob(f"{shape}-*.gguf*"):
        f.unlink()
    res = [run_step("tailor F16", src=str(model), out=str(f16), quant="f16",
                    threads=args.threads)]
    per_quant = {}
    for quant in args.quants:
        ours, ref = work / f"{shape}-{quant}.gguf", work / f"{shape}-{quant}-llama.gguf"
        mine = theirs = None
        for _ in range(args.repeats):  # interleaved; each side's least CPU and wall kept
            for f in (ours, ref, ours.with_name(ours.name + ".json")):  # (the export record)
                f.unlink(missing_ok=True)
            mine = _least(mine, run_step(f"tailor {quant.upper()}", src=str(model),
                                         out=str(ours), quant=quant, threads=args.threads))
            theirs = _least(theirs, run_step(f"llama.cpp {quant.upper()}", src=str(f16),
                                             out=str(ref), ftype=QUANT_BY_NAME[quant].ftype,
                                             threads=args.threads))
        same, total, diff = compare_in_child(ours, ref)
        res += [mine, theirs]
        per_quant[quant] = {"ratio": mine["wall_s"] / theirs["wall_s"],
                            "cpu_s": [mine["cpu_s"], theirs["cpu_s"]],
                            "wall_s": [mine["wall_s"], theirs["wall_s"]],
                            "work_per_largest": (mine["peak_rss"] - mine["base_rss"]) / largest,
                            "cpu_ratio": mine["cpu_s"] / theirs["cpu_s"],
                            "identical_tensors": [same, total], "differ": diff[:5],
                            "size_mb": ours.stat().st_size / 1e6,
                            "llama_size_mb": ref.stat().st_size / 1e6}
        ours.unlink()
        ref.unlink()
    _print_steps(res, largest)
    if args.repeats > 1:
        print(f"(each type's two steps: least CPU and least wall of {args.repeats} interleaved "
              "runs, the load of the least-CPU run)")
    print(f"{'type':<8}{'CPU s Tailor/llama.cpp':>24}{'ratio':>7}{'wall s':>16}{'ratio':>7}"
          f"{'work/largest':>14}{'identical':>11}{'size MB':>9}")
    for quant, r in per_quant.items():
        same, total = r["identical_tensors"]
        cpu = f"{r['cpu_s'][0]:.2f} / {r['cpu_s'][1]:.2f}"
        wall = f"{r['wall_s'][0]:.1f} / {r['wall_s'][1]:.1f}"
        print(f"{quant:<8}{cpu:>24}{r['cpu_ratio']:>7.2f}{wall:>16}{r['ratio']:>7.2f}"
              f"{r['work_per_largest']:>14.2f}{f'{same}/{total}':>11}{r['size_mb']:>9.1f}"
              + (f"  differ: {r['differ']}" if r["differ"] else ""))
    return {"params": params, "largest_tensor_bytes": largest, "steps": res,
            "quants": per_quant}


def main() -> None:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", nargs="*", default=["qwen05"], choices=sorted(SHAPES),
                    help="model shapes to export (none: only the encoder table)")
    ap.add_argument("--quants", nargs="+", default=DEFAULT_QUANTS,
                    help="file types to compare ('all': every quantized type llama.cpp's "
                         "quantizer writes from F16)")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None, help="both quantizers (default: all)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run each type's two quantizers this many times, interleaved, and "
                         "keep each side's least CPU and wall time (a shared machine's noise "
                         "only ever adds time)")
    ap.add_argument("--no-encoders", action="store_true", help="skip the per-type table")
    ap.add_argument("--keep", default=None, help="keep the files in this folder")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    if args.quants == ["all"]:
        args.quants = ALL_QUANTS
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tailor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average (1, 5, 15 min) at the start: {os.getloadavg()}, "
          f"{os.cpu_count()} CPUs")
    # Same thread count for both: llama.cpp's nthread 0 means hardware_concurrency(),
    # Tailor's None means os.cpu_count().
    print(f"threads: Tailor {args.threads or os.cpu_count()}, llama.cpp nthread "
          f"{args.threads or 0} (= {args.threads or os.cpu_count()})")
    figures = {}
    try:
        for shape in args.shape:
            figures[shape] = bench_shape(shape, work, args)
        if not args.no_encoders:
            rows = encoder_throughput()
            figures["encoders"] = rows
            print("\nencoders, one thread, M values per CPU second (per wall second in "
                  "brackets); float16 in, llama.cpp: float32 in, as llama_model_quantize "
                  f"hands over after its conversion; load {os.getloadavg()[0]:.1f}")
            print(f"{'type':<8}{'Tailor':>16}{'llama.cpp':>16}{'ratio':>8}  identical")
            for r in rows:
                ours = f"{r['ours_mvps']:.1f} ({r['ours_wall_mvps']:.1f})"
                theirs = f"{r['llama_mvps']:.1f} ({r['llama_wall_mvps']:.1f})"
                print(f"{r['type']:<8}{ours:>16}{theirs:>16}"
                      f"{r['ours_mvps'] / r['llama_mvps']:>8.2f}  {r['identical']}")
        print(f"load average at the end: {os.getloadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
