"""A batch of preference pairs as three passes: the shared prompts once, then the chosen
answers and the rejected answers, each at its own width.

Both answers of a pair continue the same prompt, so the prompt's keys and values are the same
for both. The prompt pass computes them once (each row's prompt from position 0, padding
after it); each answer pass then attends to them through a stand-in KV cache, as generation
attends to a prompt cache: each answer's RoPE offset is its own prompt's length, so every token
keeps the position it has in its full row, and the masks hide the padding. Against one pass
over 2B full rows this computes the prompt tokens once instead of twice and pads each side only
to its own longest answer, which is what brings a step's time and its memory peak down
(bench/dpo_vs_mlx_lm_lora.py).

The stand-in caches reach mlx-lm's models the way packing's do (engine/train/packing.py: every
attention layer reads ``cache.offset`` for RoPE, calls ``update_and_fetch`` and takes the mask
from ``make_mask``), so the families are packing's exact ones; for any other family (or when
no pair shares a prompt token) each side is one plain pass over its full rows.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import mlx.core as mx
import numpy as np

from ..models.token_loss import split_head, trained_token_nll
from .batching import PAD_MULTIPLE, _round_up, collate
from .packing import PACKING_EXACT, _grouped_scores


@dataclass
class PairSide:
    """One side (chosen or rejected) of B pairs: rows after the shared prompt, or whole rows
    when there is no prompt pass."""
    inputs: mx.array   # [B, A]
    targets: mx.array  # [B*A]
    index: mx.array    # [K] trained flat positions (padded with 0)
    owner: mx.array    # [B, K] 1.0 where trained position k is in row r
    n_trained: int


def shared_prompt_length(chosen, rejected, max_seq_length: int) -> int:
    """Tokens of a pair the prompt pass computes: the tokens both sides share before either's
    first trained target, less the last of them (each answer pass starts from it, so every
    trained target is predicted inside an answer pass)."""
    c, r = chosen.tokens[:max_seq_length], rejected.tokens[:max_seq_length]
    common = 0
    while common < min(len(c), len(r)) and c[common] == r[common]:
        common += 1
    first = [next((t for t in range(1, len(e.tokens[:max_seq_length])) if e.loss_mask[t]),
                  len(e.tokens)) for e in (chosen, rejected)]
    return max(0, min(common, *first) - 1)


def shares_prompts(model) -> bool:
    """Whether the prompt pass is exact for ``model``'s family (packing's families)."""
    if split_head(model)[0] is None:
        return False
    inner = model.language_model if "language_model" in model and "model" not in model \
        else model
    mt = getattr(getattr(inner, "args", None), "model_type", None)
    return mt in PACKING_EXACT


def _side(examples, skip: list[int], max_seq_length: int, pad_id: int) -> PairSide:
    rows = [SimpleNamespace(tokens=list(e.tokens[:max_seq_length])[s:],
                            loss_mask=list(e.loss_mask[:max_seq_length])[s:])
            for e, s in zip(examples, skip)]
    b = collate(rows, max_seq_length, pad_id)
    width = b.inputs.shape[1]
    at = np.array(b.index) // width
    owner = (at[None, :] == np.arange(len(rows))[:, None]) * np.array(b.weight)[None, :]
    return PairSide(b.inputs, b.targets, b.index, mx.array(owner.astype(np.float32)),
                    b.n_trained)


def collate_sides(pairs, max_seq_length: int, pad_id: int, share: bool):
    """(prompt, prompt_length, chosen PairSide, rejected PairSide) of B pairs: ``prompt``
    [B, P] the shared prompt tokens (left-aligned, padded after) and ``prompt_length`` [B]
    their counts, both None when ``share`` is False or no pair shares a token."""
    skip = [shared_prompt_length(p.chosen, p.rejected, max_seq_length) if share else 0
            for p in pairs]
    prompt = length = None
    if max(skip) > 0:
        tokens = np.full((len(pairs), _round_up(max(skip), PAD_MULTIPLE)), pad_id,
                         dtype=np.int32)
        for i, (p, n) in enumerate(zip(pairs, skip)):
            tokens[i, :n] = p.chosen.tokens[:n]
        prompt, length = mx.array(tokens), mx.array(np.array(skip, dtype=np.int32))
    return (prompt, length, _side([p.chosen for p in pairs], skip, max_seq_length, pad_id),
            _side([p.rejected for p in pairs], skip, max_seq_length, pad_id))


# -- the stand-in caches ------------------------------------------------------------------------
class _Masks:
    """The boolean masks of one batch's passes, built once per window size.

    Prompt pass [P, P]: causal (a row's padding comes after its tokens, so they never see it).
    Answer pass [B, 1, A, P + A]: the row's real prompt tokens, then the answer's own tokens
    causally. Every token sits at its own position (the answers' RoPE offset is each row's
    prompt length), so a pair's values do not depend on the batch it is in, and a sliding
    window bounds position differences."""

    def __init__(self, length: mx.array, width: int, extra_axes: int):
        self.length, self.width, self.extra_axes = length, width, extra_axes
        self._built: dict = {}

    def prompt(self, window):
        key = ("prompt", window)
        if key not in self._built:
            pos = mx.arange(self.width)
            mask = pos[:, None] >= pos[None, :]
            if window is not None:
                mask = mask & (pos[:, None] < pos[None, :] + window)
            self._built[key] = mask
        return self._built[key]

    def answer(self, n: int, window):
        key = ("answer", n, window)
        if key not in self._built:
            p, lengths = self.width, self.length[:, None]
            a = mx.arange(n)
            seen = mx.concatenate([mx.broadcast_to(mx.arange(p)[None, None, :] <
                                                   lengths[:, :, None], (len(self.length), n, p)),
                                   mx.broadcast_to((a[:, None] >= a[None, :])[None],
                                                   (len(self.length), n, n))], axis=2)
            if window is not None:
                q = lengths + a[None, :]                                   # [B, A]
                k = mx.concatenate([mx.broadcast_to(mx.arange(p)[None], (len(self.length), p)),
                                    q], axis=1)                            # [B, P + A]
                seen = seen & (q[:, :, None] < k[:, None, :] + window)
            for _ in range(self.extra_axes):
                seen = mx.expand_dims(seen, 1)
            self._built[key] = seen
        return self._built[key]


class _PromptCache:
    """The prompt pass's cache of one layer: keeps the layer's keys and values."""

    offset = 0

    def __init__(self, masks: _Masks):
        self.masks, self.keys, self.values = masks, None, None

    def update_and_fetch(self, keys, values):
        self.keys, self.values = keys, values
        return keys, values

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        return self.masks.prompt(window_size)


class _AnswerCache:
    """An answer pass's cache of one layer: the prompt's keys and values before the answer's;
    ``offset`` (RoPE's) is each row's prompt length."""

    def __init__(self, prompt: _PromptCache):
        self.prompt = prompt
        self.offset = prompt.masks.length

    def update_and_fetch(self, keys, values):
        return (mx.concatenate([self.prompt.keys, keys], axis=2),
                mx.concatenate([self.prompt.values, values], axis=2))

    def make_mask(self, n: int, return_array: bool = False, window_size: int | None = None):
        return self.prompt.masks.answer(n, window_size)


def pair_logps(model, split, prompt, prompt_length, sides):
    """(summed trained log-probs [2B], trained tokens [2B]) of the chosen then the rejected
    rows: the prompt pass (when ``prompt`` is not None), then one pass per side."""
    caches = None
    if prompt is not None:
        masks = _Masks(prompt_length, prompt.shape[1], 2 if _grouped_scores(model) else 1)
        caches = [_PromptCache(masks) for _ in model.layers]
        split[0](prompt, cache=caches)  # only the keys and values it leaves are used
    logps, counts = [], []
    for inputs, targets, index, owner in sides:
        answer = None if caches is None else [_AnswerCache(c) for c in caches]
        # the weights (1 trained, 0 index padding): the last block's feed-forward runs on the
        # trained rows only (engine/models/token_loss.py)
        token = -trained_token_nll(model, inputs, targets, index, cache=answer, split=split,
                                   weight=owner.sum(axis=0))
        logps.append(owner @ token)
        counts.append(owner.sum(axis=1))
    return mx.concatenate(logps), mx.concatenate(counts)
