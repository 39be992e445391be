"""Log-probabilities of the trained tokens, computing the output layer only where a target is
trained: the one implementation training's loss (engine/train/loss.py) and evaluation's
held-out loss and forgetting probe (engine/evaluate) share, so "the eval's loss" and "the
trainer's validation loss" are the same arithmetic. It lives here, below both (the layers
contract puts evaluate below train).

The output layer (hidden x vocabulary) is the biggest matmul of a small model, and its logits
the biggest array of a long example (L x V floats: 2048 tokens on a 150k vocabulary is over
1 GB in float32); mlx-lm's loss computes it for every position and then masks. We gather the
trained positions' hidden states first, so prompt and padding positions never reach it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn

Split = tuple[Callable | None, Callable | None]


def split_head(model) -> Split:
    """(body, head) with ``head(body(x)) == model(x)`` for the families we know, else (None,
    None): then the loss falls back to full logits."""
    inner = model
    if "language_model" in model and not ("model" in model):
        inner = model.language_model  # gemma3 multimodal wrapper around gemma3_text
    if "model" not in inner or not hasattr(inner.model, "embed_tokens"):
        return None, None
    mt = getattr(getattr(inner, "args", None), "model_type", None) or getattr(inner, "model_type",
                                                                              None)
    known = {"llama", "mistral", "qwen2", "qwen3", "phi3", "gemma", "gemma2", "gemma3_text",
             "gemma3"}
    if mt not in known:
        return None, None
    body = inner.model
    softcap = getattr(inner, "final_logit_softcapping", None) if mt == "gemma2" else None

    def head(h):
        if "lm_head" in inner:
            out = inner.lm_head(h)
        else:
            out = body.embed_tokens.as_linear(h)
        if softcap:
            out = mx.tanh(out / softcap) * softcap
        return out

    return (lambda x, cache=None: body(x, cache=cache)), head


def trained_token_nll(model, inputs: mx.array, targets: mx.array, index: mx.array, *,
                      cache=None, split: Split | None = None) -> mx.array:
    """The negative log-probability (float32) of ``targets`` at the flattened positions
    ``index`` of ``inputs`` [B, L] (row-major: row * L + position), each predicted from the
    tokens before it. ``split``: ``split_head(model)``, computed once by a caller in a loop."""
    body, head = split if split is not None else split_head(model)
    if body is not None:
        h = body(inputs, cache)
        logits = head(mx.take(h.reshape(-1, h.shape[-1]), index, axis=0))
    else:
        logits = model(inputs, cache=cache)
        logits = mx.take(logits.reshape(-1, logits.shape[-1]), index, axis=0)
    return nn.losses.cross_entropy(logits.astype(mx.float32), mx.take(targets, index))


def answer_logprob(model, tokens: Sequence[int], mask: Sequence[int], *,
                   split: Split | None = None) -> tuple[float, int]:
    """(sum of log p, count) over the positions of one example's ``tokens`` whose ``mask`` is
    1, each token predicted from the ones before it (the first token is never scored)."""
    toks = list(tokens)
    trained = [i for i, m in enumerate(list(mask)[1:len(toks)]) if m]
    if len(toks) < 2 or not trained:
        return 0.0, 0
    nll = trained_token_nll(model, mx.array(toks[:-1])[None], mx.array(toks[1:]),
                            mx.array(trained), split=split)
    total = -nll.sum()
    mx.eval(total)
    return float(total.item()), len(trained)
