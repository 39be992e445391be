"""Benchmark: `tailor export` on a model with the shapes of Qwen2.5-0.5B, against llama.cpp's own
quantizer on the same F16 file.

The model: Qwen2.5-0.5B's config (hidden 896, 24 layers, 14 heads / 2 KV heads, FFN 4864,
vocab 151936, tied embeddings), random weights written as F16 safetensors shards into a
temporary folder, with the tiny Qwen BPE tokenizer (the token list is padded to the embedding
with [PAD{i}] entries, as for any checkpoint whose embedding is larger than its vocabulary).

Steps, each in a fresh child process (wall time and peak RSS from getrusage in the child; the
child's RSS after its imports, before any work, is reported as the constant):

1. tailor F16:     export_gguf(folder, F16)   (verify=False: the timing is the conversion)
2. tailor Q4_K_M:  export_gguf(folder, Q4_K_M) from the same safetensors
3. llama.cpp:      llama_model_quantize(F16 GGUF of step 1 -> Q4_K_M)

Also compares the two Q4_K_M files tensor by tensor (type and bytes). Hidden 896 is not a
multiple of 256, so (in llama.cpp as in Tailor) most matrices fall back from Q4_K to Q5_0 and
from Q6_K to Q8_0; ffn_down (rows of 4864) gets Q4_K/Q6_K.

    .venv/bin/python bench/export.py                # full size
    .venv/bin/python bench/export.py --layers 4     # quicker
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


def write_model(folder: Path, layers: int, seed: int = 0) -> tuple[int, int]:
    """Random F16 weights in one shard per layer; returns (params, largest tensor bytes)."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine.tiny_models import cached_tiny_model

    cfg = dict(QWEN05, num_hidden_layers=layers)
    folder.mkdir(parents=True)
    tok_src = cached_tiny_model("qwen2")
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
    for i in range(layers):
        p = f"model.layers.{i}."
        shards.append({
            p + "input_layernorm.weight": (1 + rand(h)).astype(np.float16),
            p + "post_attention_layernorm.weight": (1 + rand(h)).astype(np.float16),
            p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.q_proj.bias": rand(h),
            p + "self_attn.k_proj.weight": rand(kv, h), p + "self_attn.k_proj.bias": rand(kv),
            p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.v_proj.bias": rand(kv),
            p + "self_attn.o_proj.weight": rand(h, h),
            p + "mlp.gate_proj.weight": rand(f, h), p + "mlp.up_proj.weight": rand(f, h),
            p + "mlp.down_proj.weight": rand(h, f)})
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
    import resource

    from engine.export.gguf_export import export_gguf  # noqa: F401 - imports count as constant
    import llama_cpp  # noqa: F401

    import transformers  # noqa: F401
    ru = resource.getrusage(resource.RUSAGE_SELF)
    base_rss, cpu0 = ru.ru_maxrss * 1024, ru.ru_utime + ru.ru_stime
    t0 = time.perf_counter()
    if step.startswith("llama.cpp"):
        import ctypes

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
        params.nthread = args["threads"] or 0
        rc = llama_cpp.llama_model_quantize(args["src"].encode(), args["out"].encode(),
                                            ctypes.byref(params))
        assert rc == 0, rc
    else:
        export_gguf(Path(args["src"]), Path(args["out"]), args["quant"], verify=False,
                    threads=args["threads"])
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    q.put({"step": step, "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime - cpu0,
           "peak_rss": ru.ru_maxrss * 1024, "base_rss": base_rss})


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--threads", type=int, default=None, help="both quantizers (default: all)")
    ap.add_argument("--keep", default=None, help="keep the files in this folder")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tailor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model = work / "qwen05-shaped"
        if not model.exists():
            # In a child: the parent's RSS high-water mark carries over into every child
            # (Linux keeps it across fork+exec), so the parent must stay small.
            ctx = mp.get_context("spawn")
            p = ctx.Process(target=write_model, args=(model, args.layers))
            p.start()
            p.join()
            if p.exitcode != 0:
                raise SystemExit("writing the model failed")
        params, largest = _model_size(model)
        import os

        # Same thread count for both: llama.cpp's nthread 0 means hardware_concurrency(),
        # Tailor's None means os.cpu_count().
        print(f"threads: Tailor {args.threads or os.cpu_count()}, llama.cpp nthread "
              f"{args.threads or 0} (= {args.threads or os.cpu_count()})")
        print(f"model: {params / 1e6:.1f} M parameters ({args.layers} layers), F16 "
              f"safetensors {params * 2 / 1e9:.2f} GB, largest tensor {largest / 1e6:.0f} MB")
        for f in ("f16.gguf", "q4km.gguf", "llama-q4km.gguf"):
            (work / f).unlink(missing_ok=True)
            (work / (f + ".json")).unlink(missing_ok=True)
        res = [run_step("tailor F16", src=str(model), out=str(work / "f16.gguf"), quant="f16",
                        threads=args.threads),
               run_step("tailor Q4_K_M", src=str(model), out=str(work / "q4km.gguf"),
                        quant="q4_k_m", threads=args.threads),
               run_step("llama.cpp Q4_K_M", src=str(work / "f16.gguf"),
                        out=str(work / "llama-q4km.gguf"), threads=args.threads)]
        res[2]["step"] = "llama.cpp Q4_K_M"
        print(f"{'step':<18}{'wall s':>9}{'CPU s':>8}{'peak RSS MB':>13}{'constant MB':>13}"
              f"{'work MB':>10}{'work/largest':>14}")
        for r in res:
            work_mb = (r["peak_rss"] - r["base_rss"]) / 1e6
            print(f"{r['step']:<18}{r['wall_s']:>9.1f}{r['cpu_s']:>8.1f}"
                  f"{r['peak_rss'] / 1e6:>13.0f}"
                  f"{r['base_rss'] / 1e6:>13.0f}{work_mb:>10.0f}"
                  f"{work_mb * 1e6 / largest:>14.2f}")
        ratio = res[1]["wall_s"] / res[2]["wall_s"]
        cpu_ratio = res[1]["cpu_s"] / res[2]["cpu_s"]
        same, total, diff = compare(work / "q4km.gguf", work / "llama-q4km.gguf")
        print(f"Q4_K_M wall time: Tailor / llama.cpp = {ratio:.2f} "
              f"({'no slower' if ratio <= 1 else 'slower'} than llama.cpp's C quantizer; note "
              "Tailor reads safetensors while llama.cpp reads the F16 GGUF); CPU time ratio "
              f"{cpu_ratio:.2f}")
        print(f"Q4_K_M files: {same}/{total} tensors byte-identical"
              + (f"; differ: {diff[:5]}" if diff else ""))
        sizes = {f: (work / f).stat().st_size / 1e6 for f in
                 ("f16.gguf", "q4km.gguf", "llama-q4km.gguf")}
        print("sizes MB: " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"params": params, "largest_tensor_bytes": largest, "steps": res,
                 "q4km_ratio": ratio, "q4km_cpu_ratio": cpu_ratio, "identical_tensors": [same, total],
                 "sizes_mb": sizes}, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
