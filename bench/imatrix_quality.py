"""Does `--imatrix auto` make low-bit exports closer to the model? (issue 21)

Builds a tiny fixture model (256 wide by default, so the K-quant blocks apply), trains a LoRA
adapter on an arithmetic chat dataset (learnable, so the held-out split means something),
then exports each type twice: without an importance matrix and
with `--imatrix auto` (computed once over the adapter's training split, then given back as a
file for the other types). Every export runs the full verification, whose quality step
(engine/export/quality.py) measures in llama.cpp the mean KL divergence of the file's
next-token distribution from the fused model in MLX (float32) on the adapter's held-out split,
and the perplexity there. Prints one row per type, and the load average.

    .venv/bin/python bench/imatrix_quality.py
    .venv/bin/python bench/imatrix_quality.py --kind qwen3_moe --quants q2_k q3_k_m q4_k_m
    .venv/bin/python bench/imatrix_quality.py --outliers 4   # real-LLM-like outlier channels
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_sums(path: Path, n: int) -> Path:
    """"What is A plus B?" -> "A plus B is C." with n distinct pairs of numbers below 1000
    (export_quality.py's task, wider: its 50 pairs leave 5 held-out examples after
    de-duplication, too few positions to compare two files)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            a, b = (i * 37) % 1000, (i * 11) % 997
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}) + "\n")
    return path


def with_outliers(model: Path, dest: Path, n: int, seed: int) -> Path:
    """A copy of `model` whose RMSNorm weights feeding the blocks' matrices (input_layernorm,
    post_attention_layernorm) have the same n channels (seeded) scaled by 10-30x in every
    layer: real LLMs have a few such persistent outlier activation channels, which is where
    an importance matrix pays off; the fixtures' norms are ~1, so their activations are
    nearly isotropic."""
    import shutil

    import mlx.core as mx
    import numpy as np

    shutil.copytree(model, dest)
    weights, meta = mx.load(str(dest / "model.safetensors"), return_metadata=True)
    norms = [k for k in weights if k.endswith(("input_layernorm.weight",
                                               "post_attention_layernorm.weight"))]
    rng = np.random.default_rng(seed)
    width = weights[norms[0]].shape[0]
    channels = rng.choice(width, size=n, replace=False)
    scale = np.ones(width, dtype=np.float32)
    scale[channels] = rng.uniform(10.0, 30.0, size=n)
    for k in norms:
        weights[k] = weights[k] * mx.array(scale).astype(weights[k].dtype)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata=meta)
    print(f"outliers: channels {sorted(channels.tolist())} x "
          f"{[round(float(scale[c]), 1) for c in sorted(channels)]} in {len(norms)} norms")
    return dest


def export(args: list[str]) -> tuple[dict, float]:
    """`tailor export ARGS` in this process -> (the record, CPU seconds)."""
    from engine.cli import main as cli_main
    from engine.export.gguf_export import record_path

    t0 = time.process_time()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["export", *args])
    cpu = time.process_time() - t0
    out = Path(args[args.index("--out") + 1])
    if not record_path(out).exists():
        raise SystemExit(f"export failed ({code}):\n{err.getvalue()[-2000:]}")
    return json.loads(record_path(out).read_text()), cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="llama3")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--examples", type=int, default=600)
    p.add_argument("--iters", type=int, default=150)
    p.add_argument("--ctx", type=int, default=256, help="--imatrix-ctx")
    p.add_argument("--quants", nargs="+", default=["q2_k", "q3_k_m"])
    p.add_argument("--outliers", type=int, default=0, help="scale this many RMSNorm "
                   "channels by 10-30x in a copy of the fixture before training (0: none)")
    p.add_argument("--outlier-seed", type=int, default=0)
    p.add_argument("--reuse", default="", help="a folder of an earlier run: its trained "
                   "adapter is used again (the exports are made anew)")
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()}")
    root = Path(a.reuse) if a.reuse else Path(tempfile.mkdtemp(prefix="imatrix-quality-"))
    os.environ["TAILOR_HOME"] = str(root / "home")
    for old in root.glob("*.gguf*"):  # an earlier run's exports (--reuse)
        old.unlink()

    from engine.tiny_models import cached_tiny_model
    from engine.train.config import make_config
    from engine.train.run import train_adapter

    model = cached_tiny_model(a.kind, hidden_size=a.hidden, intermediate_size=a.intermediate,
                              num_hidden_layers=a.layers)
    if a.outliers and not (root / "base-outliers").exists():
        model = with_outliers(model, root / "base-outliers", a.outliers, a.outlier_seed)
    elif a.outliers:
        model = root / "base-outliers"
    from engine.library import get_adapter

    if a.reuse and (root / "home" / "adapters" / "bench" / "adapters.safetensors").exists():
        info = get_adapter("bench")
        print(f"reusing the adapter trained in {root}")
    else:
        data = write_sums(root / "sums.jsonl", a.examples)
        t0 = time.process_time()
        info = train_adapter(str(model), data, "bench", make_config(
            iters=a.iters, eval_every=0, rank=8, batch_size=8, learning_rate=2e-3,
            baseline_prompts=0))
        print(f"trained {a.kind} {a.hidden}x{a.layers} on {a.examples} examples, {a.iters} "
              f"steps ({time.process_time() - t0:.0f} s CPU)")
    loss = info.manifest.get("loss_history", {}).get("valid") or [[0, None]]
    print(f"validation loss {loss[0][1]} at step {loss[0][0]} -> {loss[-1][1]} at step "
          f"{loss[-1][0]}", flush=True)
    matrix = None
    rows = []
    for quant in a.quants:
        plain, plain_cpu = export(["--adapter", "bench", "--quant", quant,
                                   "--out", str(root / f"plain-{quant}.gguf")])
        if matrix is None:
            out = root / f"imatrix-{quant}.gguf"
            weighted, w_cpu = export(["--adapter", "bench", "--quant", quant, "--imatrix", "auto",
                                      "--imatrix-ctx", str(a.ctx), "--out", str(out)])
            matrix = weighted["metadata"]["imatrix"]["path"]
        else:
            weighted, w_cpu = export(["--adapter", "bench", "--quant", quant, "--imatrix",
                                      matrix, "--out", str(root / f"imatrix-{quant}.gguf")])
        rows.append((quant, plain, weighted, plain_cpu, w_cpu))
    im = rows[0][2]["metadata"]["imatrix"]
    print(f"importance matrix: {im['entries']} entries over {im['chunk_count']} chunks of "
          f"{im['chunk_size']} tokens ({im.get('tokens')} tokens of {im.get('data_kind')})")
    q0 = rows[0][1]["verification"]["quality"]
    print(f"quality text: {q0['text']}; {q0['tokens']} scored positions; reference: "
          f"{q0['reference']}; reference perplexity {q0['reference_perplexity']:.3f}")
    print("| type | KL mean without | KL mean with --imatrix auto | with / without | "
          "ppl without | ppl with | same top without | with | export CPU s without | with |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for quant, plain, weighted, pc, wc in rows:
        qp, qw = plain["verification"]["quality"], weighted["verification"]["quality"]
        print(f"| {quant.upper()} | {qp['kl_mean']:.5f} | {qw['kl_mean']:.5f} | "
              f"{qw['kl_mean'] / qp['kl_mean']:.3f} | {qp['perplexity']:.3f} | "
              f"{qw['perplexity']:.3f} | {qp['same_top']:.3f} | {qw['same_top']:.3f} | "
              f"{pc:.1f} | {wc:.1f} |")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
