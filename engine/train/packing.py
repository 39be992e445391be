"""Sequence packing (``--pack``): several examples per row, each attending only to itself.

A packed row holds whole examples up to the maximum length. The attention mask is
block-diagonal causal (a token sees the earlier tokens of its own example only), and a sliding
window, where a layer has one, is applied inside each example as it is unpacked. RoPE makes
attention depend on relative positions only, so with this mask every example's logits are what
they are alone (tests/train/test_packing.py checks it per example on every fixture family), and
the loss on its trained tokens is unchanged.

The mask reaches mlx-lm's models without touching them: every model builds its mask with
``create_attention_mask(h, cache)``, which asks the cache's ``make_mask``, and passes the cache
to each attention layer, which reads ``cache.offset`` for RoPE and ``update_and_fetch``. A
stand-in cache with offset 0 that hands keys and values straight back and returns our mask is
therefore the whole change, exact and local to the packed forward pass.
"""
from __future__ import annotations

import mlx.core as mx

from ..events import TailorError
# the planner lives in pack_plan (stdlib only, shared with the app's step preview)
from .pack_plan import pack_rows  # noqa: F401

# Families whose mlx-lm attention takes the mask from create_attention_mask and uses RoPE, each
# checked per example against the unpacked forward pass in tests/train/test_packing.py.
PACKING_EXACT = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                 "gemma3", "phi3")
# Families with learned absolute position embeddings: an example's positions would depend on
# where it sits in the row, so packed training would differ from unpacked.
ABSOLUTE_POSITIONS = ("gpt2", "gpt_bigcode", "gpt_neo", "opt")


def packing_problem(config: dict) -> str | None:
    """Why ``--pack`` would not train this model exactly as unpacked (None: it would)."""
    model_type = config.get("model_type", "") or "?"
    if model_type in ABSOLUTE_POSITIONS:
        return (f"{model_type} adds absolute position embeddings, so an example's positions "
                "would depend on where it sits in a packed row and packed training would differ "
                "from unpacked")
    if model_type not in PACKING_EXACT:
        return (f"packing is exact only where attention sees relative positions (RoPE) and "
                f"takes Tailor's block mask, checked for {', '.join(PACKING_EXACT)}; "
                f"{model_type} is not among them")
    return None


def refuse_unpackable(config: dict, where: str) -> None:
    problem = packing_problem(config)
    if problem:
        raise TailorError(f"--pack is not available for {where}: {problem}",
                          hint="train without --pack (--no-pack): batches of similar lengths "
                               "keep padding small anyway")


class _BlockMasks:
    """The block-diagonal causal masks of one packed batch, built once per window size.

    ``segments`` [B, L]: 1, 2, ... per example in its row, 0 for padding (padding attends to
    padding, so no row of the softmax is empty)."""

    def __init__(self, segments: mx.array, heads_axis: int):
        self.segments = segments
        self.extra_axes = heads_axis  # 1 for [B, 1, L, L]; 2 for gemma2's grouped scores
        self._built: dict = {}

    def get(self, window_size: int | None) -> mx.array:
        if window_size not in self._built:
            seg = self.segments
            pos = mx.arange(seg.shape[1])
            mask = (seg[:, :, None] == seg[:, None, :]) & (pos[:, None] >= pos[None, :])
            if window_size is not None:
                mask = mask & (pos[:, None] < pos[None, :] + window_size)
            for _ in range(self.extra_axes):
                mask = mx.expand_dims(mask, 1)
            self._built[window_size] = mask
        return self._built[window_size]


class _SegmentCache:
    """Stands in for mlx-lm's KV cache of one layer in a packed forward pass (see module doc)."""

    offset = 0

    def __init__(self, masks: _BlockMasks):
        self._masks = masks

    def update_and_fetch(self, keys, values):
        return keys, values

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        return self._masks.get(window_size)


def _grouped_scores(model) -> bool:
    """gemma2 computes attention scores itself as [B, kv heads, repeats, L, L] when query heads
    share key heads; its mask needs one more axis than SDPA's [B, heads, L, L]."""
    args = getattr(model, "args", None)
    if getattr(args, "model_type", None) != "gemma2":
        return False
    return args.num_attention_heads != args.num_key_value_heads


def segment_caches(model, segments: mx.array) -> list[_SegmentCache]:
    """One stand-in cache per transformer block of ``model``, sharing one set of masks."""
    masks = _BlockMasks(segments, 2 if _grouped_scores(model) else 1)
    return [_SegmentCache(masks) for _ in model.layers]
