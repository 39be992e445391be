"""What each GGUF type costs a fine-tuned model: size, KL divergence from the model and
perplexity, for every type Tailor writes (issue 21, the README's table).

Builds a tiny fixture model (llama3, 256 wide and 8 layers by default, so the K-quant blocks
apply), trains a LoRA adapter on an arithmetic chat dataset (learnable, so the held-out
perplexity means something), then exports it once per type with the full verification.
The verification's quality step (engine/export/quality.py) measures in llama.cpp the KL
divergence of the file's next-token distribution from the fused model in MLX with float32
weights, and the perplexity, on the adapter's held-out split (its trained tokens). Prints a
Markdown table and the load average; each export's CPU seconds are from time.process_time.

    .venv/bin/python bench/export_quality.py
    .venv/bin/python bench/export_quality.py --quants f16 q8_0 q4_k_m q2_k --kind qwen2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_sums(path: Path, n: int) -> Path:
    """"What is A plus B?" -> "A plus B is C." for n different pairs (a task the fixtures
    learn; no two alike, since training drops duplicates)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            a, b = divmod(i, 25)
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}) + "\n")
    return path


def main() -> None:
    from engine.export.quant_types import QUANT_TYPES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="llama3")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--examples", type=int, default=400)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--quants", nargs="*", default=[q.name for q in QUANT_TYPES])
    args = p.parse_args()
    print(f"load average at start: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="export-quality-") as td:
        os.environ["TAILOR_HOME"] = str(Path(td) / "home")
        from engine.data import DataConfig
        from engine.export.gguf_export import export_gguf
        from engine.results import ExportQuality
        from engine.tiny_models import cached_tiny_model
        from engine.train.config import make_config
        from engine.train.run import train_adapter

        base = cached_tiny_model(args.kind, hidden_size=args.hidden,
                                 intermediate_size=2 * args.hidden,
                                 num_hidden_layers=args.layers)
        data = write_sums(Path(td) / "sums.jsonl", args.examples)
        t0 = time.process_time()
        trained = train_adapter(str(base), data, "sums", make_config(
            iters=args.iters, eval_every=0, rank=8, batch_size=4, learning_rate=2e-3,
            baseline_prompts=0), data_config=DataConfig(valid_fraction=0.2))
        print(f"trained {args.iters} steps ({time.process_time() - t0:.0f} s CPU), best val "
              f"loss {trained.manifest.get('best_val_loss')}", flush=True)
        rows = []
        for quant in args.quants:
            t0 = time.process_time()
            r = export_gguf("sums", Path(td) / f"sums-{quant}.gguf", quant)
            q = ExportQuality.of(r)
            params = sum(math.prod(t["shape"]) for t in r.tensors)  # every tensor's weights
            rows.append((quant, r.size_bytes, 8 * r.size_bytes / params, q, r.verified,
                         time.process_time() - t0))
            print(f"  {quant}: {r.size_bytes} bytes, KL {q.kl_mean:.3g}, ppl "
                  f"{q.perplexity:.4f}, verified {r.verified}", flush=True)
    ref = rows[0][3]
    print(f"\n{args.kind} {args.hidden} wide, {args.layers} layers, {params:,} weights; "
          f"{ref.tokens} held-out tokens ({ref.examples} examples); reference: "
          f"{ref.reference}; full-precision perplexity {ref.reference_perplexity:.4f}\n")
    print("| type | size | bits/weight | mean KL | p99 KL | same top | perplexity | verified "
          "| CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for quant, size, bpw, q, ok, cpu in rows:
        print(f"| {quant.upper()} | {size / 1e3:.0f} KB | {bpw:.2f} | {q.kl_mean:.2e} | "
              f"{q.kl_p99:.2e} | {q.same_top:.1%} | {q.perplexity:.4f} | "
              f"{'yes' if ok else 'NO'} | {cpu:.1f} |")
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
