"""Loss on trained tokens only, computing the output layer only where a target is trained.

The per-token computation is engine/models/token_loss.py's, the one evaluation's held-out
loss uses too (so an eval's loss is the trainer's validation loss on the same examples); this
module adds the batch's weights and packed rows' attention.
"""
from __future__ import annotations

from typing import Callable

import mlx.core as mx

from ..models.fast_linear import fast_linears, plain_linears
from ..models.token_loss import split_head, trained_token_nll
from .packing import segment_caches


def make_loss(model) -> Callable:
    """``loss(model, inputs, targets, index, weight, segments=None) -> (mean loss, trained
    tokens)``; ``segments`` [B, L] marks the examples of packed rows (engine/train/packing.py),
    whose attention is then kept to each example. The full-precision linear layers run with
    engine/models/fast_linear.py's layout while it computes (same values, less CPU)."""
    split = split_head(model)
    linears = plain_linears(model)  # the blocks' and head's full-precision linear layers

    def loss(model, inputs, targets, index, weight, segments=None):
        cache = segment_caches(model, segments) if segments is not None else None
        with fast_linears(linears):
            ce = trained_token_nll(model, inputs, targets, index, cache=cache, split=split,
                                   weight=weight)
        n = weight.sum()
        return (ce * weight).sum() / mx.maximum(n, 1.0), n

    return loss
