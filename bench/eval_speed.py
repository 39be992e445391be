"""Held-out prompts per second: Tailor's batched evaluation against mlx-lm's `generate` called
one prompt at a time, on the same prompts and model, in one run.

    .venv/bin/python bench/eval_speed.py [--prompts 48] [--max-tokens 48] [--batch-size 16]

The model is a tiny-model config (Llama 3 style; ``--hidden`` and ``--layers`` scale it up;
built once into the tiny-model cache, no download). The prompts are chat-templated user
messages of 20 to ~150 tokens. The one-at-a-time side is mlx-lm's ``stream_generate``, the
loop ``mlx_lm.generate`` wraps (generate only joins its texts), so the token ids can be
compared: both sides decode greedily with the same stop tokens and produce the same tokens
(checked, and printed), so the figures compare the same work.

Where batching pays: on Apple silicon a decoding step is bound by reading the weights, which a
batch reads once for all its rows. On the Linux CPU wheels MLX's matmul is the reference BLAS
(libblas 3.10), whose cost grows with the rows, so there only the per-step overhead is shared:
the small default model shows that; ``--hidden 512 --layers 4`` shows the matmul-bound case.

Ends with one line: `batched P prompts/s, one at a time Q prompts/s, speed-up S x (goal 3 x)`.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _prompts(renderer, n: int, seed: int) -> list[list[int]]:
    from engine.tiny_models import corpus

    lines = corpus(400, seed=seed)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        text = " ".join(rng.choice(lines) for _ in range(rng.randint(1, 6)))
        out.append(renderer.prompt_ids([{"role": "user", "content": text}]))
    return out


def _one_at_a_time(model, tokenizer, prompts, max_tokens: int) -> list[list[int]]:
    """mlx-lm's own generation, one prompt after the other: the answers' token ids (the
    stop token, which stream_generate yields last, left out as the batched side does)."""
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    stops = set(tokenizer.eos_token_ids)
    out = []
    for x in prompts:
        ids = [r.token for r in stream_generate(model, tokenizer, x, max_tokens=max_tokens,
                                                sampler=make_sampler(temp=0.0))]
        out.append([int(t) for t in ids if int(t) not in stops])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=48)
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--kind", default="llama3", help="the tiny-model family to scale up")
    p.add_argument("--hidden", type=int, default=128, help="hidden size (intermediate: 2x)")
    p.add_argument("--layers", type=int, default=2, help="transformer layers")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import mlx.core as mx

    from engine.evaluate.generation import PromptRenderer, greedy_answers
    from engine.models import count_parameters, load_model
    from engine.tiny_models import cached_tiny_model

    folder = cached_tiny_model(a.kind, hidden_size=a.hidden, intermediate_size=2 * a.hidden,
                               num_hidden_layers=a.layers)
    model, tokenizer, _ = load_model(folder)
    model.eval()
    prompts = _prompts(PromptRenderer(tokenizer), a.prompts, a.seed)
    lengths = sorted(len(x) for x in prompts)
    print(f"model {folder.name}: {count_parameters(model) / 1e6:.1f} M parameters; "
          f"{len(prompts)} prompts of {lengths[0]}-{lengths[-1]} tokens "
          f"(median {lengths[len(lengths) // 2]}), at most {a.max_tokens} answer tokens")

    # warm-up of both paths (first-call compilation and allocation are not what is compared)
    greedy_answers(model, tokenizer, prompts[:2], max_tokens=4, batch_size=2)
    _one_at_a_time(model, tokenizer, prompts[:1], 4)
    mx.synchronize()

    t0 = time.perf_counter()
    batched = greedy_answers(model, tokenizer, prompts, max_tokens=a.max_tokens,
                             batch_size=a.batch_size)
    t_batched = time.perf_counter() - t0

    t0 = time.perf_counter()
    single = _one_at_a_time(model, tokenizer, prompts, a.max_tokens)
    t_single = time.perf_counter() - t0

    same = sum(b.token_ids == s for b, s in zip(batched, single))
    tokens = sum(len(b.token_ids) for b in batched)
    rate_b, rate_s = len(prompts) / t_batched, len(prompts) / t_single
    print(f"batched (batch {a.batch_size}): {t_batched:.2f} s, {tokens / t_batched:.0f} "
          f"answer tokens/s")
    print(f"mlx-lm one at a time: {t_single:.2f} s, {tokens / t_single:.0f} "
          f"answer tokens/s")
    print(f"identical answers: {same} of {len(prompts)}")
    print(f"batched {rate_b:.2f} prompts/s, one at a time {rate_s:.2f} prompts/s, "
          f"speed-up {rate_b / rate_s:.2f} x (goal 3 x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
