"""Loss on trained tokens only, computing the output layer only where a target is trained.

The output layer (hidden x vocabulary) is the biggest matmul of a small model; mlx-lm's loss
computes it for every position and then masks. We gather the trained positions' hidden states
first, so prompt and padding positions never reach the output layer.
"""
from __future__ import annotations

from typing import Callable

import mlx.core as mx
import mlx.nn as nn

from .packing import segment_caches


def split_head(model) -> tuple[Callable | None, Callable | None]:
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


def make_loss(model) -> Callable:
    """``loss(model, inputs, targets, index, weight, segments=None) -> (mean loss, trained
    tokens)``; ``segments`` [B, L] marks the examples of packed rows (engine/train/packing.py),
    whose attention is then kept to each example."""
    body, head = split_head(model)

    def loss(model, inputs, targets, index, weight, segments=None):
        cache = segment_caches(model, segments) if segments is not None else None
        if body is not None:
            h = body(inputs, cache)
            h = mx.take(h.reshape(-1, h.shape[-1]), index, axis=0)
            logits = head(h)
        else:
            logits = model(inputs, cache=cache)
            logits = mx.take(logits.reshape(-1, logits.shape[-1]), index, axis=0)
        ce = nn.losses.cross_entropy(logits.astype(mx.float32), mx.take(targets, index))
        n = weight.sum()
        return (ce * weight).sum() / mx.maximum(n, 1.0), n

    return loss
