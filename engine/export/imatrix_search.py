"""`make_qp_quants`, the importance-weighted fit of a super-block's sub-block scales (Q2_K,
Q4_K, Q5_K with an importance matrix), vectorized over super-blocks.

Our numpy formulation of llama.cpp's `make_qp_quants` (`ggml/src/ggml-quants.c`), bit for
bit: super-blocks are the COLUMNS of C-contiguous [n, N] arrays (sums over axis 0 add in
row order, as the C loops do; see kquants_search), products keep the C grouping.

The C code stores levels in a `uint8_t` array but sums with the `int` it computed; a negative
level (only from a negative scale, which the K-quant searches practically never return) is
kept both ways here, wrapped where the C code reads the array back.

The refinement walks a super-block's n values in order and each accepted change moves the
sums the next value is judged by: so the values loop in Python while every step works on all
super-blocks at once. The C code stops a super-block after a pass that changed nothing;
another pass would change nothing either (same state, same decisions), so running all five
passes on every super-block gives the same levels.
"""
from __future__ import annotations

import numpy as np

from .kquants_search import F32, GROUP_MAX_EPS, nearest_int_exact, sequential_sum

_PASSES = 5


def fit_qp(x: np.ndarray, weights: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """`make_qp_quants(n, nmax, x, L, quant_weights)` for every column of x [n, N] with
    weights [n, N] -> (L as the C array holds it: uint8 [n, N], scale [N] float32)."""
    top = np.maximum(x.max(axis=0), F32(0))
    zero = ~(top >= GROUP_MAX_EPS)  # all zero (C: max < GROUP_MAX_EPS; NaN never reaches)
    with np.errstate(all="ignore"):
        iscale = F32(nmax) / top
        stored = (nearest_int_exact(iscale * x) & 0xFF).astype(F32)  # no MIN here in C
        diff = x - (F32(1) / iscale) * stored
        best = sequential_sum(weights * diff * diff)
        for step in range(-4, 5):
            if step == 0:
                continue
            step_iscale = (F32(0.1) * F32(step) + F32(nmax)) / top
            levels = np.minimum(nearest_int_exact(step_iscale * x), nmax).astype(F32)
            diff = x - (F32(1) / step_iscale) * levels
            mse = sequential_sum(weights * diff * diff)
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, step_iscale, iscale).astype(F32)
        levels = np.minimum(nearest_int_exact(iscale * x), nmax)
        weighted_x = weights * x
        lf = levels.astype(F32)
        sum_lx = sequential_sum(weighted_x * lf)
        sum_l2 = sequential_sum(weights * lf * lf)
        stored = (levels & 0xFF).astype(F32)
        for _ in range(_PASSES):
            for i in range(x.shape[0]):
                _refine_value(i, x, weights, weighted_x, stored, sum_lx, sum_l2, nmax)
        scale = np.where(sum_l2 > 0, sum_lx / sum_l2, F32(0)).astype(F32)
    stored[:, zero] = 0
    scale[zero] = 0
    return stored.astype(np.uint8), scale


def _refine_value(i, x, weights, weighted_x, stored, sum_lx, sum_l2, nmax) -> None:
    """One step of make_qp_quants' refinement: value i of every super-block (in place)."""
    w, level = weights[i], stored[i]
    slx = sum_lx - weighted_x[i] * level
    sl2 = sum_l2 - w * level * level
    new = np.minimum(nearest_int_exact(x[i] * sl2 / slx), nmax)
    new_f = new.astype(F32)
    cand = np.flatnonzero((slx > 0) & (sl2 > 0) & (new_f != level))
    if not len(cand):
        return
    new_f = new_f[cand]
    slx_new = slx[cand] + weighted_x[i, cand] * new_f
    sl2_new = sl2[cand] + w[cand] * new_f * new_f
    old_lx, old_l2 = sum_lx[cand], sum_l2[cand]
    take = slx_new * slx_new * old_l2 > old_lx * old_lx * sl2_new
    idx = cand[take]
    level[idx] = (new[idx] & 0xFF).astype(F32)
    sum_lx[idx] = slx_new[take]
    sum_l2[idx] = sl2_new[take]
