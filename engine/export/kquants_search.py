"""The per-sub-block scale searches behind llama.cpp's K-quants, vectorized over sub-blocks.

Our own numpy formulation of `make_qkx2_quants` (Q4_K, Q5_K: scale and min per 32 values)
and `make_qx_quants` with rmse_type 1 (Q6_K: signed scale per 16 values) from llama.cpp's
`ggml/src/ggml-quants.c`. The goal is bit-identical output to llama.cpp's reference
quantizers, so every float32 operation follows the C expression order:

- Sub-blocks are the COLUMNS of a C-contiguous [n, N] array. numpy reduces axis 0 of such an
  array row after row (strictly sequential float32 adds, like the C loops); reducing the
  contiguous axis would use pairwise summation and change the last bits.
- `a*b*c` in C is `(a*b)*c`; each product below keeps that grouping.
- Rounding: C's `nearest_int` adds 1.5*2**23 and reads the mantissa, i.e. round half to
  even for |v| < 2**22, which is `np.rint`. `nearest_int_exact` copies the bit trick for the
  places where out-of-range or non-finite values can reach it.
- The search steps of `make_qkx2_quants` are sequential: a step that improves the error also
  moves `min`, and the next step's grid is built from the moved min. So the steps loop in
  Python while every step works on all sub-blocks at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

F32 = np.float32
ROUND_MAGIC = F32(12582912.0)  # 1.5 * 2**23
GROUP_MAX_EPS = F32(1e-15)


_MANTISSA = np.int32(0x007FFFFF)
_HALF_RANGE = np.int32(0x00400000)


def nearest_int_exact(values: np.ndarray) -> np.ndarray:
    """llama.cpp's `nearest_int` on float32 values, bit for bit (also for NaN and overflow).

    In place on the sum's bits with int32 scalars: `bits & 0x7FFFFF` with a Python int
    takes numpy's slow path here (7x the time of the whole function as written)."""
    bits = (np.asarray(values, dtype=F32) + ROUND_MAGIC).view(np.int32)
    bits &= _MANTISSA
    bits -= _HALF_RANGE
    return bits


def sequential_sum(columns: np.ndarray) -> np.ndarray:
    """Sum of a C-contiguous [n, N] array over axis 0, added strictly in row order."""
    assert columns.flags.c_contiguous
    return np.add.reduce(columns, axis=0)


def _clamped_levels(scaled: np.ndarray, low: float, high: float) -> np.ndarray:
    """round-half-even then clamp, in place; levels stay float32 (C converts int l to float)."""
    np.rint(scaled, out=scaled)
    # np.clip: about 4x faster here than np.maximum + np.minimum (which track NaNs)
    np.clip(scaled, F32(low), F32(high), out=scaled)
    return scaled


def _exact_clamped_levels(scaled: np.ndarray, low: float, high: float) -> np.ndarray:
    """_clamped_levels with C's nearest_int also past 2**22 (what its bit trick makes of
    such a value, then the clamp), in place."""
    scaled[...] = np.clip(nearest_int_exact(scaled), low, high)
    return scaled


@dataclass
class MinScaleFit:
    """Result of the asymmetric search for N sub-blocks (one value per sub-block).

    `scale` and `the_min` are what `make_qkx2_quants` returns (the_min = -min >= 0). The
    levels it chose are not kept; `levels()` rebuilds them from the grid of the winning step
    (`grid_iscale`, `grid_min`) for the rare sub-blocks whose final scale is zero.
    """

    scale: np.ndarray
    the_min: np.ndarray
    grid_iscale: np.ndarray
    grid_min: np.ndarray
    flat: np.ndarray  # max == min (or a range so small that nmax/range overflows): levels 0

    def levels(self, columns: np.ndarray, nmax: int, which: np.ndarray) -> np.ndarray:
        """The levels `make_qkx2_quants` left in L for the sub-blocks `which` -> [n, k] float32."""
        with np.errstate(all="ignore"):
            scaled = self.grid_iscale[which] * (columns[:, which] - self.grid_min[which])
        levels = _clamped_levels(scaled, 0, nmax)
        levels[:, self.flat[which]] = 0
        return levels


def _error_sum_in_place(levels, x, weights, scale, the_min, use_mad=False) -> np.ndarray:
    """C's `cur_error`: sum of w * ((scale*l + min) - x)**2 (or w * |...| with `use_mad`) in
    its float32 order (levels is overwritten)."""
    levels *= scale
    levels += the_min
    levels -= x
    if use_mad:
        np.abs(levels, out=levels)
    else:
        np.square(levels, out=levels)
    levels *= weights
    return sequential_sum(levels)


def fit_min_scale(columns: np.ndarray, nmax: int, rmin: float, rdelta: float,
                  nstep: int, weights: np.ndarray | None = None,
                  use_mad: bool = False, exact_rounding: bool = False) -> MinScaleFit:
    """`make_qkx2_quants` for every column of `columns` ([n, N]): weights av_x + |x| (Q4_K,
    Q5_K) unless given (Q2_K: |x|, with `use_mad`, the absolute error). `exact_rounding`:
    levels by C's nearest_int also where |iscale * (x - min)| passes 2**22 (importance
    weights can fit a min far from a value of tiny weight; imatrix_quants)."""
    clamped_levels = _exact_clamped_levels if exact_rounding else _clamped_levels
    n = columns.shape[0]
    x = columns
    if weights is None:
        sum_x2 = sequential_sum(x * x)
        av_x = np.sqrt(sum_x2 / F32(n))
        weights = np.abs(x)
        weights += av_x
    sum_w = sequential_sum(weights)
    sum_x = sequential_sum(weights * x)

    x_max = x.max(axis=0)
    cur_min = np.minimum(x.min(axis=0), F32(0))
    with np.errstate(all="ignore"):
        iscale = F32(nmax) / (x_max - cur_min)
        flat = (x_max == cur_min) | ~np.isfinite(iscale)
        scale = F32(1) / iscale

        # In-place ops on warm buffers: writing a third array costs ~40% more per pass.
        levels = np.empty_like(x)
        weighted = np.empty_like(x)
        work = np.empty_like(x)
        shifted = x - cur_min  # x - min, refreshed only where min moves

        np.multiply(shifted, iscale, out=levels)
        clamped_levels(levels, 0, nmax)
        best_error = _error_sum_in_place(levels, x, weights, scale, cur_min, use_mad)

        grid_iscale = iscale.copy()
        grid_min = cur_min.copy()
        span = x_max - cur_min
        for step in range(nstep + 1):
            step_iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / span
            np.multiply(shifted, step_iscale, out=levels)
            clamped_levels(levels, 0, nmax)
            np.multiply(weights, levels, out=weighted)
            sum_l = sequential_sum(weighted)
            np.multiply(weighted, levels, out=work)
            sum_l2 = sequential_sum(work)
            weighted *= x
            sum_xl = sequential_sum(weighted)

            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            positive_min = this_min > 0
            if positive_min.any():
                this_min[positive_min] = 0
                this_scale[positive_min] = (sum_xl / sum_l2)[positive_min]

            error = _error_sum_in_place(levels, x, weights, this_scale, this_min, use_mad)
            better = np.flatnonzero((det > 0) & (error < best_error))
            if len(better):
                best_error[better] = error[better]
                scale[better] = this_scale[better]
                grid_iscale[better] = step_iscale[better]
                grid_min[better] = cur_min[better]
                cur_min[better] = this_min[better]
                span = x_max - cur_min
                if len(better) * 8 < len(span):
                    shifted[:, better] = x.take(better, axis=1) - cur_min[better]
                else:
                    np.subtract(x, cur_min, out=shifted)

    scale[flat] = 0
    return MinScaleFit(scale=scale, the_min=-cur_min, grid_iscale=grid_iscale,
                       grid_min=grid_min, flat=flat)


@dataclass
class SymmetricFit:
    """Result of `make_qx_quants(n, nmax, x, L, rmse_type=1, NULL)` for N sub-blocks."""

    scale: np.ndarray
    grid_iscale: np.ndarray
    zero: np.ndarray  # max |x| < GROUP_MAX_EPS: levels 0

    def levels(self, columns: np.ndarray, nmax: int, which: np.ndarray) -> np.ndarray:
        """The levels (offset by nmax, 0..2*nmax-1) it left in L for sub-blocks `which`."""
        with np.errstate(all="ignore"):
            scaled = self.grid_iscale[which] * columns[:, which]
        levels = _clamped_levels(scaled, -nmax, nmax - 1)
        levels += F32(nmax)
        levels[:, self.zero[which]] = 0
        return levels


def signed_peak(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the value of largest |x| (the first one, as the C loop keeps) and |x|.

    argmax over axis 0 is slow in numpy; max plus two equality tests is not, and only
    columns holding both +peak and -peak need the first index.
    """
    amax = np.abs(columns).max(axis=0)
    has_positive = (columns == amax).any(axis=0)
    peak = np.where(has_positive, amax, -amax)
    both = np.flatnonzero(has_positive & (columns == -amax).any(axis=0) & (amax > 0))
    if len(both):
        sub = columns[:, both]
        first = np.abs(sub).argmax(axis=0)
        peak[both] = sub[first, np.arange(len(both))]
    return peak, amax


def fit_symmetric_scale(columns: np.ndarray, nmax: int,
                        weights: np.ndarray | None = None) -> SymmetricFit:
    """`make_qx_quants` with rmse_type 1 (weights x*x, or the importance-matrix weights
    `weights` shaped like `columns`: its `qw`) for every column of `columns`."""
    x = columns
    peak, amax = signed_peak(x)
    zero = amax < GROUP_MAX_EPS

    weights = x * x if weights is None else weights
    weighted_x = weights * x
    levels = np.empty_like(x)
    work = np.empty_like(x)

    def sums(iscale):
        np.multiply(x, iscale, out=levels)
        _clamped_levels(levels, -nmax, nmax - 1)
        np.multiply(weights, levels, out=work)
        np.multiply(work, levels, out=work)
        sum_l2 = sequential_sum(work)
        np.multiply(levels, weighted_x, out=levels)  # last use of levels: in place is cheaper
        return sequential_sum(levels), sum_l2

    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / peak
        sum_lx, sum_l2 = sums(iscale)
        scale = np.where(sum_l2 != 0, sum_lx / sum_l2, F32(0)).astype(F32)
        best = scale * sum_lx
        grid_iscale = iscale.copy()
        for step in range(-9, 10):
            if step == 0:
                continue
            step_iscale = -(F32(nmax) + F32(0.1) * F32(step)) / peak
            sum_lx, sum_l2 = sums(step_iscale)
            better = np.flatnonzero((sum_l2 > 0) & (sum_lx * sum_lx > best * sum_l2))
            if len(better):
                scale[better] = sum_lx[better] / sum_l2[better]
                best[better] = scale[better] * sum_lx[better]
                grid_iscale[better] = step_iscale[better]

    scale[zero] = 0
    return SymmetricFit(scale=scale, grid_iscale=grid_iscale, zero=zero)


def fit_q3_scale(columns: np.ndarray, nmax: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """`make_q3_quants(n, nmax, x, L, do_rmse=true)` for every column of `columns` ([16, N]):
    (scale [N], levels [16, N] offset by nmax, float32).

    The C refinement walks a sub-block's values in order, and each accepted change moves the
    sums the next value is judged by: so the values loop in Python while every step works on
    all sub-blocks at once. A sub-block whose pass changed nothing would change nothing
    again (same state, same decisions): running the remaining passes on it is a no-op, so
    only the sub-blocks still changing are carried into the next pass (measured: 19%, 5%,
    1% of them after passes 1, 2, 3). Pass 1 walks the values; passes 2-5 walk the
    candidates (_q3_later_passes: measured 3.3 -> 2.6 ms per 2048 super-blocks).
    """
    x = columns
    peak, amax = signed_peak(x)
    zero = amax < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / peak
        levels = np.clip(nearest_int_exact(iscale * x), -nmax, nmax - 1).astype(F32)
    weights = x * x
    weighted_x = weights * x
    # C's w*x[i]*L[i] and w*L[i]*L[i] terms: kept per value and refreshed where L changes
    # (the same float32 products the C code recomputes)
    terms = _Q3Terms(weights, weighted_x, levels, weighted_x * levels,
                     weights * levels * levels)
    sum_lx = sequential_sum(terms.wxl)
    sum_l2 = sequential_sum(terms.wl2)
    # an all-zero sub-block never changes (slx 0)
    changed = _q3_pass(x, terms, sum_lx, sum_l2, nmax)
    if changed.any():
        _q3_later_passes(x, terms.levels, sum_lx, sum_l2, np.flatnonzero(changed), nmax, 4)
    with np.errstate(all="ignore"):
        scale = np.where(sum_l2 > 0, sum_lx / sum_l2, F32(0)).astype(F32)
    levels += F32(nmax)
    scale[zero] = 0
    levels[:, zero] = 0
    return scale, levels


@dataclass
class _Q3Terms:
    weights: np.ndarray     # x*x
    weighted_x: np.ndarray  # x*x*x
    levels: np.ndarray      # L, float32
    wxl: np.ndarray         # (w*x)*L
    wl2: np.ndarray         # (w*L)*L


def _q3_pass(x, terms: _Q3Terms, sum_lx, sum_l2, nmax) -> np.ndarray:
    """Pass 1 of make_q3_quants' refinement over all sub-blocks (arrays updated in place);
    returns which of them changed. Only the few values whose rounded level moves are
    judged further (the rest of the C test is skipped for them there too)."""
    xs, ws, wxs = x, terms.weights, terms.weighted_x
    ls, wxl, wl2 = terms.levels, terms.wxl, terms.wl2
    slx_all, sl2_all = sum_lx, sum_l2
    changed = np.zeros(x.shape[1], dtype=bool)
    with np.errstate(all="ignore"):
        for i in range(x.shape[0]):
            level = ls[i]
            slx = slx_all - wxl[i]
            sl2 = sl2_all - wl2[i]
            new = np.clip(nearest_int_exact(xs[i] * sl2 / slx), -nmax, nmax - 1).astype(F32)
            cand = np.flatnonzero((slx > 0) & (new != level))
            if not len(cand):
                continue
            new_c, w_c = new[cand], ws[i, cand]
            new_wxl, new_wl2 = wxs[i, cand] * new_c, w_c * new_c * new_c
            slx_new = slx[cand] + new_wxl
            sl2_new = sl2[cand] + new_wl2
            old_lx, old_l2 = slx_all[cand], sl2_all[cand]
            take = (sl2_new > 0) & (slx_new * slx_new * old_l2 > old_lx * old_lx * sl2_new)
            if take.any():
                idx = cand[take]
                level[idx] = new_c[take]
                wxl[i, idx], wl2[i, idx] = new_wxl[take], new_wl2[take]
                slx_all[idx], sl2_all[idx] = slx_new[take], sl2_new[take]
                changed[idx] = True
    return changed


_SIXTEEN_BITS = np.arange(1 << 16)
# the lowest set bit of a 16-bit mask (16 for none): a sub-block's next candidate value
_LOWEST_BIT = np.where(_SIXTEEN_BITS == 0, 16, np.log2(
    np.maximum(_SIXTEEN_BITS & -_SIXTEEN_BITS, 1)).astype(np.int8))
_GATHER_BITS = np.uint64(0x0102040810204080)
_LATER_VALUES = np.array([(0xFFFF << i) & 0xFFFF for i in range(17)], dtype=np.uint64)


@dataclass
class _Q3Candidates:
    """Per value of the sub-blocks still changing ([N, 16]: a sub-block per row), under
    their current sums: the sums without the value (slx, sl2) and its new rounded level."""
    slx: np.ndarray
    sl2: np.ndarray
    new: np.ndarray
    moves: np.ndarray  # [N] bit i: value i would move to a new level

    def judge(self, xs, levels, wxl, wl2, slx_all, sl2_all, cols, nmax) -> None:
        slx = slx_all[cols, None] - wxl[cols]
        sl2 = sl2_all[cols, None] - wl2[cols]
        new = np.clip(nearest_int_exact(xs[cols] * sl2 / slx), -nmax, nmax - 1)
        new = new.astype(F32)
        self.slx[cols], self.sl2[cols], self.new[cols] = slx, sl2, new
        moves = (slx > 0) & (new != levels[cols])
        # 8 flags (bytes 0/1) -> one byte, flag k at bit k: one multiply (np.packbits: 6x)
        eights = (np.ascontiguousarray(moves).view(np.uint64) * _GATHER_BITS) >> np.uint64(56)
        self.moves[cols] = eights[:, 0] | (eights[:, 1] << np.uint64(8))


def _q3_later_passes(x, all_levels, sum_lx, sum_l2, active, nmax, passes) -> None:
    """Passes 2-5 of make_q3_quants' refinement for the sub-blocks `active` (arrays updated
    in place), one numpy round per judged candidate instead of per value: until a change is
    taken a sub-block's sums stay as they are, so every value's test is known at once and
    only the next value whose rounded level moves needs judging; a take re-derives that
    sub-block's tests. A sub-block starts its next pass when it has no candidate left and
    this pass changed something (the same float32 operations as the value loop, so the
    same decisions)."""
    # a sub-block per row: each round gathers whole sub-blocks (no float32 sums here, so
    # the layout does not change a bit)
    xs, levels = x[:, active].T.copy(), all_levels[:, active].T.copy()
    ws = xs * xs
    wxs = ws * xs
    wxl, wl2 = wxs * levels, ws * levels * levels
    slx_all, sl2_all = sum_lx[active], sum_l2[active]
    m = len(active)
    cands = _Q3Candidates(np.empty(xs.shape, F32), np.empty(xs.shape, F32),
                          np.empty(xs.shape, F32), np.zeros(m, dtype=np.uint64))
    done = np.full(m, -1)  # the last value judged in this sub-block's pass
    passes_left = np.full(m, passes)
    changed = np.zeros(m, dtype=bool)  # in this sub-block's current pass
    live = np.arange(m)
    with np.errstate(all="ignore"):
        cands.judge(xs, levels, wxl, wl2, slx_all, sl2_all, slice(None), nmax)
        while len(live):
            at = _LOWEST_BIT[cands.moves[live] & _LATER_VALUES[done[live] + 1]]
            at = at.astype(np.intp)
            has = at < 16
            restart = live[:0]
            if not has.all():
                ended = live[~has]
                restart = ended[changed[ended] & (passes_left[ended] > 1)]
                passes_left[restart] -= 1
                changed[restart] = False
                done[restart] = -1
                live, at = live[has], at[has]
            flat = live * 16 + at  # flat takes: 2x the speed of [live, at] pairs
            new_c = cands.new.take(flat)
            new_wxl = wxs.take(flat) * new_c
            new_wl2 = ws.take(flat) * new_c * new_c
            slx_new = cands.slx.take(flat) + new_wxl
            sl2_new = cands.sl2.take(flat) + new_wl2
            old_lx, old_l2 = slx_all[live], sl2_all[live]
            take = (sl2_new > 0) & (slx_new * slx_new * old_l2 > old_lx * old_lx * sl2_new)
            done[live] = at
            if take.any():
                idx, row = live[take], at[take]
                levels[idx, row] = new_c[take]
                wxl[idx, row], wl2[idx, row] = new_wxl[take], new_wl2[take]
                slx_all[idx], sl2_all[idx] = slx_new[take], sl2_new[take]
                changed[idx] = True
                cands.judge(xs, levels, wxl, wl2, slx_all, sl2_all, idx, nmax)
            if len(restart):
                live = np.concatenate((live, restart))
    all_levels[:, active] = levels.T
    sum_lx[active] = slx_all
    sum_l2[active] = sl2_all
