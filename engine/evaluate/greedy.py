"""One prompt at a time, greedily, with a KV cache: the MLX side of the forgetting probe, the
run's baseline and shipped-file parity.

Parity compares token for token, so every model it compares (MLX + adapter, the fused folder)
goes through this same unbatched loop: padding or batching cannot move a logit between them.
(The log-likelihood of given answers is engine/models/token_loss.py's answer_logprob, the
arithmetic of training's loss.)
Each step can also report how close MLX's top two tokens were (``gaps``), which is what tells a
rounding flip in a shipped file from a broken one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..events import CancelToken


@dataclass
class Greedy:
    """A greedy continuation: ``tokens`` (the stop token excluded), whether a stop token ended
    it, and per position the top-two gap relative to the position's largest |logit| (one more
    entry than ``tokens`` when it stopped: the stop position's)."""

    tokens: list[int]
    stopped: bool
    gaps: list[float] = field(default_factory=list)


def stop_ids(tokenizer) -> set[int]:
    """The token ids that end an answer: the tokenizer's EOS ids (mlx-lm's wrapper knows the
    config's list, e.g. Llama 3's <|eot_id|> beside <|end_of_text|>)."""
    ids = set(getattr(tokenizer, "eos_token_ids", None) or ())
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.add(int(eos))
    return {int(i) for i in ids}


def relative_gap(logits) -> float:
    """(top1 - top2) / max|logit| of one position's float32 logits (a numpy or MLX vector)."""
    import numpy as np

    row = np.asarray(logits, dtype=np.float32)
    top2 = np.partition(row, -2)[-2:]
    scale = max(1e-6, float(np.abs(row).max()))
    return float(top2[1] - top2[0]) / scale


def greedy(model, prompt: Sequence[int], max_tokens: int, stops: set[int], *,
           gaps: bool = False, cancel: CancelToken | None = None) -> Greedy:
    """Greedy tokens after ``prompt`` (ids) from an MLX model, at most ``max_tokens``."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    logits = model(mx.array(list(prompt))[None], cache=cache)[0, -1]
    out: list[int] = []
    found: list[float] = []
    for _ in range(max_tokens):
        row = np.array(logits.astype(mx.float32))
        tok = int(row.argmax())
        if gaps:
            found.append(relative_gap(row))
        if tok in stops:
            return Greedy(out, True, found)
        out.append(tok)
        if cancel is not None:
            cancel.raise_if_cancelled()
        logits = model(mx.array([[tok]]), cache=cache)[0, -1]
    return Greedy(out, False, found)


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where the token lists differ (one ending counts), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
