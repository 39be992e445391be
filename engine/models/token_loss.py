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

from .fast_linear import embedding_as_linear

Split = tuple[Callable | None, Callable | None]


# Families whose causal LM is ``<lm>.model`` (the transformer, ending in its final norm) then
# the output layer (``lm_head``, or the tied embedding) and at most one elementwise step after
# it: "softcap" (tanh(x / c) * c, c = final_logit_softcapping) or "scale" (x / logits_scaling).
# Each is read from mlx-lm's Model.__call__ and checked against the full forward (loss and every
# LoRA gradient) in tests/train/test_split_head.py; a family not listed falls back to full logits.
HEAD_STEP: dict[str, str | None] = {
    "llama": None, "mistral": None, "qwen2": None, "qwen3": None, "phi3": None, "gemma": None,
    "gemma3_text": None, "smollm3": None, "olmo2": None, "ministral3": None, "qwen3_moe": None,
    "mixtral": None, "gpt_oss": None, "qwen3_5": None, "qwen3_5_moe": None, "qwen3_next": None,
    "gemma2": "softcap", "gemma4_text": "softcap",
    "granite": "scale", "granitemoe": "scale", "granitemoehybrid": "scale",
}
# Multimodal wrappers whose __call__ hands the tokens straight to ``language_model``.
WRAPPERS = ("gemma3", "gemma4", "qwen3_5", "qwen3_5_moe")


def _model_type(m) -> str | None:
    return getattr(getattr(m, "args", None), "model_type", None) or getattr(m, "model_type",
                                                                            None)


def split_head(model) -> Split:
    """(body, head) with ``head(body(x)) == model(x)`` for the families of ``HEAD_STEP``, else
    (None, None): then the loss falls back to full logits."""
    inner = model
    if _model_type(model) in WRAPPERS and "language_model" in model and "model" not in model:
        inner = model.language_model
    mt = _model_type(inner)
    if mt not in HEAD_STEP or "model" not in inner or not hasattr(inner.model, "embed_tokens"):
        return None, None
    if getattr(inner, "sharding_group", None) is not None:  # qwen3_5's tensor-parallel head
        return None, None
    body, step = inner.model, HEAD_STEP[mt]
    softcap = getattr(inner, "final_logit_softcapping", None) if step == "softcap" else None
    scaling = getattr(inner, "logits_scaling", None) if step == "scale" else None
    # every listed family has an lm_head exactly when it uses one (gemma3_text's sanitize drops
    # it when the checkpoint ties the embedding)
    out_layer = inner.lm_head if "lm_head" in inner else \
        (embedding_as_linear(body.embed_tokens) or body.embed_tokens.as_linear)

    def head(h):
        out = out_layer(h)
        if softcap:
            out = mx.tanh(out / softcap) * softcap
        if scaling is not None:
            out = out / scaling
        return out

    return _Body(body), head


class _Body:
    """``body(x, cache)``: the transformer's final-normed hidden states. With ``rows`` (the
    flat trained positions and their 0/1 weights) the last block's feed-forward runs on those
    rows only: after the last attention every step is per position and only the trained
    positions reach the output layer, so the other rows' feed-forward is never needed (on the
    bench's 4-layer model with 20% of tokens trained that is ~12% of a step's multiply-adds;
    on a 24-layer model ~3%). Rows with weight 0 (index padding) add nothing."""

    def __init__(self, body):
        self.body = body
        layers = getattr(body, "layers", None)
        last = layers[-1] if layers else None
        # "mlp" only: a block's per-position feed-forward in every HEAD_STEP family, checked
        # in tests/train/test_split_head.py; an MoE block routes each token on its own
        self.last = last if last is not None and "mlp" in last else None

    def __call__(self, x, cache=None, rows=None):
        if rows is None or self.last is None:
            return self.body(x, cache=cache)
        ffn = self.last.mlp
        object.__setattr__(self.last, "mlp", _OnRows(ffn, *rows))  # the module tree is unchanged
        try:
            return self.body(x, cache=cache)
        finally:
            object.__delattr__(self.last, "mlp")


class _OnRows:
    def __init__(self, ffn, index, weight):
        self.ffn, self.index, self.weight = ffn, index, weight

    def __call__(self, h, *args, **kwargs):
        flat = h.reshape(-1, h.shape[-1])
        out = self.ffn(mx.take(flat, self.index, axis=0)[None], *args, **kwargs)[0]
        out = out * self.weight[:, None].astype(out.dtype)  # padding rows repeat index 0
        return mx.zeros_like(flat).at[self.index].add(out).reshape(h.shape)


def trained_token_nll(model, inputs: mx.array, targets: mx.array, index: mx.array, *,
                      cache=None, split: Split | None = None,
                      weight: mx.array | None = None) -> mx.array:
    """The negative log-probability (float32) of ``targets`` at the flattened positions
    ``index`` of ``inputs`` [B, L] (row-major: row * L + position), each predicted from the
    tokens before it. ``split``: ``split_head(model)``, computed once by a caller in a loop.
    ``weight`` (1 for a real trained position, 0 for index padding): given, the entries of
    weight 0 are not computed (their value is undefined) and the last block's feed-forward
    runs on the trained rows only."""
    body, head = split if split is not None else split_head(model)
    if body is not None:
        h = body(inputs, cache, rows=None if weight is None else (index, weight))
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
