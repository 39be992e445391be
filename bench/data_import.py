"""Benchmark: import + tokenize N generated chat examples with Tailor and with mlx-lm's own loader.

Both read the same JSONL file with the same tokenizer (a tiny model's real tokenizer and chat
template) in one run; each contender is timed in its own fresh interpreter. mlx-lm: ``mlx_lm.tuner.datasets.load_dataset`` + ``CacheDataset``, every
item processed as its trainer does (``iterate_batches`` reads each item's tokens). Tailor:
``prepare_dataset`` (validation, dedupe, split, rendering with masks, statistics).

    .venv/bin/python bench/data_import.py              # 100,000 examples, qwen2 tokenizer
    .venv/bin/python bench/data_import.py --n 10000 --model llama2
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

WORDS = ("the model learns to answer in a fixed format with short clear sentences about "
         "rivers mountains cities numbers code music food weather history science and art "
         "because every example shows the same style so training on them is quick but the "
         "data must be clean valid and rendered with the right template or it fails").split()


def sentence(rng: random.Random, n_words: int) -> str:
    words = [rng.choice(WORDS) for _ in range(max(1, n_words))]
    return (" ".join(words)).capitalize() + rng.choice([".", "?", "!"])


def paragraph(rng: random.Random, mean_words: float) -> str:
    # Log-normal lengths: many short messages, a long tail (as real chat data has).
    total = max(2, int(rng.lognormvariate(0, 0.9) * mean_words))
    parts, left = [], total
    while left > 0:
        n = min(left, rng.randint(4, 18))
        parts.append(sentence(rng, n))
        left -= n
    return " ".join(parts)


def chat_example(rng: random.Random, i: int) -> dict:
    messages = []
    if rng.random() < 0.3:
        messages.append({"role": "system", "content": "You are assistant number %d." % (i % 7)})
    for _ in range(1 if rng.random() < 0.7 else rng.randint(2, 4)):
        messages.append({"role": "user", "content": paragraph(rng, 25)})
        messages.append({"role": "assistant", "content": paragraph(rng, 60)})
    return {"messages": messages}


def write_examples(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(chat_example(rng, i)) + "\n")


def run_mlx_lm(folder: Path, tokenizer, mask_prompt: bool) -> tuple[float, int]:
    from mlx_lm.tuner.datasets import CacheDataset, load_dataset

    args = SimpleNamespace(data=str(folder), train=True, test=False, mask_prompt=mask_prompt,
                           hf_dataset=False)
    t0 = time.perf_counter()
    train, _valid, _test = load_dataset(args, tokenizer)
    cache = CacheDataset(train)
    tokens = 0
    for i in range(len(cache)):
        ids, _offset = cache[i]
        tokens += len(ids)
    return time.perf_counter() - t0, tokens


def run_tailor(path: Path, tokenizer) -> tuple[float, int, object]:
    from engine.data import DataConfig, prepare_dataset

    t0 = time.perf_counter()
    prepared = prepare_dataset(path, tokenizer, DataConfig(max_seq_length=1 << 16))
    seconds = time.perf_counter() - t0
    tokens = sum(len(e.tokens) for e in prepared.train + prepared.valid)
    return seconds, tokens, prepared


def measure(which: str, path: Path, model: str) -> dict:
    """One contender, timed in this (fresh) process; the tokenizer loads before the clock."""
    from mlx_lm.tokenizer_utils import load as load_tokenizer

    from engine.tiny_models import cached_tiny_model

    tokenizer = load_tokenizer(cached_tiny_model(model))
    gc.collect()
    if which == "tailor":
        seconds, tokens, prepared = run_tailor(path, tokenizer)
        rep = prepared.report
        return {"seconds": seconds, "tokens": tokens,
                "trained": rep.train_stats.trained_tokens + rep.valid_stats.trained_tokens,
                "train": rep.train_examples, "valid": rep.valid_examples,
                "errors": len(rep.errors), "duplicates": rep.duplicates}
    seconds, tokens = run_mlx_lm(path.parent, tokenizer, mask_prompt=which == "mlx-masked")
    return {"seconds": seconds, "tokens": tokens}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="examples to generate")
    ap.add_argument("--model", default="qwen2", help="tiny model kind whose tokenizer is used")
    ap.add_argument("--skip-unmasked", action="store_true",
                    help="skip mlx-lm without prompt masking (its default)")
    ap.add_argument("--only", choices=["tailor", "mlx-masked", "mlx-default"],
                    help=argparse.SUPPRESS)  # internal: one contender in a child process
    ap.add_argument("--file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.only:
        print(json.dumps(measure(args.only, Path(args.file), args.model)))
        return 0

    contenders = ["tailor", "mlx-masked"] + ([] if args.skip_unmasked else ["mlx-default"])
    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp:
        path = Path(tmp) / "train.jsonl"  # mlx-lm reads <folder>/train.jsonl; Tailor the same
        t0 = time.perf_counter()
        write_examples(path, args.n)
        print(f"generated {args.n} chat examples ({path.stat().st_size / 2**20:.1f} MiB) in "
              f"{time.perf_counter() - t0:.1f} s; tokenizer: tiny {args.model}; "
              f"{os.cpu_count()} CPUs", flush=True)
        results = {}
        for which in contenders:
            # A fresh interpreter each, so one's garbage (55M Python ints) never slows another.
            proc = subprocess.run([sys.executable, __file__, "--only", which, "--file",
                                   str(path), "--model", args.model],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
            r = results[which]
            label = {"tailor": "tailor prepare_dataset       ",
                     "mlx-masked": "mlx-lm load_dataset (masked) ",
                     "mlx-default": "mlx-lm load_dataset (default)"}[which]
            extra = (f", {r['trained']} trained, {r['train']} train / {r['valid']} valid, "
                     f"{r['errors']} errors, {r['duplicates']} duplicates"
                     if which == "tailor" else "")
            print(f"{label} {r['seconds']:7.2f} s  {r['tokens']} tokens{extra}", flush=True)
    t = results["tailor"]["seconds"]
    print(f"ratio tailor / mlx-lm (masked)  = {t / results['mlx-masked']['seconds']:.2f}  "
          "(below 1: Tailor is faster)")
    if "mlx-default" in results:
        print(f"ratio tailor / mlx-lm (default) = {t / results['mlx-default']['seconds']:.2f}")
    print(json.dumps({"n": args.n, **{k: v["seconds"] for k, v in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
