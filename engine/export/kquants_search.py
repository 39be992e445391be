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


def nearest_int_in_place(values: np.ndarray, offset: int = 0) -> np.ndarray:
    """nearest_int_exact(values) + offset on a float32 temporary's own buffer (it is
    overwritten; the int32 view of it is returned): one pass and one allocation fewer."""
    values += ROUND_MAGIC
    bits = values.view(np.int32)
    bits &= _MANTISSA
    bits -= np.int32(_HALF_RANGE - offset)
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
    x_min = x.min(axis=0)
    cur_min = np.minimum(x_min, F32(0))
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
        low = x_min - cur_min  # with span: each column's extremes of x - min
        for step in range(nstep + 1):
            step_iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / span
            np.multiply(shifted, step_iscale, out=levels)
            if exact_rounding:
                clamped_levels(levels, 0, nmax)
            else:
                _rint_clamp_columns(levels, (low * step_iscale, span * step_iscale), 0, nmax)
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
            better = (det > 0) & (error < best_error)
            if better.any():
                for kept, new in ((best_error, error), (scale, this_scale),
                                  (grid_iscale, step_iscale), (grid_min, cur_min),
                                  (cur_min, this_min)):
                    np.copyto(kept, new, where=better)
                span = x_max - cur_min
                low = x_min - cur_min
                # one whole pass: cheaper than gathering and scattering the moved columns
                np.subtract(x, cur_min, out=shifted)

    scale[flat] = 0
    return MinScaleFit(scale=scale, the_min=-cur_min, grid_iscale=grid_iscale,
                       grid_min=grid_min, flat=flat)


_FIXUP = 64  # columns per one gathered: past this share of them, clamp all (A/B, load 5)


def _rint_clamp_columns(levels: np.ndarray, ends: tuple, low: int, high: int) -> None:
    """_clamped_levels(levels, low, high) in place, the clamp only on the columns that need
    it: `ends` are each column's extreme products (a product is monotone in the value, so
    the column's others lie between; NaN: unknown). The clamp leaves a rounded value in
    range (also -0.0) as it is; beyond the first steps few columns need it."""
    with np.errstate(invalid="ignore"):
        inside = np.minimum(*ends) > F32(low - 0.5)
        inside &= np.maximum(*ends) < F32(high + 0.5)
    np.rint(levels, out=levels)
    outside = np.flatnonzero(~inside)
    if len(outside) * _FIXUP > len(inside):
        np.clip(levels, F32(low), F32(high), out=levels)
    elif len(outside):
        levels[:, outside] = np.clip(levels[:, outside], F32(low), F32(high))


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

    From the column max and min (two reductions over the rows; |x| and argmax over axis 0
    are whole extra passes): the peak is the max unless the min is further from 0, and
    only columns holding both +peak and -peak need the first index.
    """
    top = columns.max(axis=0)
    bottom = -columns.min(axis=0)
    amax = np.maximum(top, bottom)
    amax += 0  # all-zero columns: +0.0 (a -0.0 max or min would leave -0.0)
    peak = np.where(top >= bottom, amax, -amax)
    both = np.flatnonzero((top == bottom) & (amax > 0))
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
    x_max, x_min = x.max(axis=0), x.min(axis=0)

    def sums(iscale):
        np.multiply(x, iscale, out=levels)
        _rint_clamp_columns(levels, (x_max * iscale, x_min * iscale), -nmax, nmax - 1)
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


@dataclass
class Q3Fit:
    """`make_q3_quants` for N sub-blocks: `scale` [N]; the levels it left in L are kept as
    the initial ones (per slice) plus the refined sub-blocks' (their columns and levels),
    and built by `levels()` only for the rare sub-blocks that keep them (a final step 0)."""

    scale: np.ndarray
    initial: list  # per slice: [16, n] float32, -nmax..nmax-1
    refined: list  # (columns, [16, k] levels) of the refined sub-blocks
    zero: np.ndarray
    nmax: int

    def levels(self, which: np.ndarray) -> np.ndarray:
        """The levels (offset by nmax) of the sub-blocks `which` (indices) -> [16, k]."""
        levels = np.concatenate(self.initial, axis=1)
        for cols, values in self.refined:
            levels[:, cols] = values
        levels += F32(self.nmax)
        levels[:, self.zero] = 0
        return levels[:, which]


def fit_q3_scale(slices: list[np.ndarray], nmax: int = 4) -> Q3Fit:
    """`make_q3_quants(n, nmax, x, L, do_rmse=true)` for every column of the C-contiguous
    [16, n_i] arrays `slices`, numbered across them in order.

    The C refinement walks a sub-block's values in order, and each accepted change moves the
    sums the next value is judged by. Until a change is accepted the sums stay, so every
    value's test under them is known at once: one numpy round finds each sub-block's next
    value whose level would move ("a move") and judges it (_q3_refine). Under the initial
    sums 80% of sub-blocks have no move at all (among them every one whose peak is
    positive: its x*L are all <= 0, so slx > 0 never holds): they are done after the first
    round, run slice by slice (cache-sized); the rest of all slices refine together, as a
    round's fixed cost (~70 small numpy calls) is then paid once for the chunk.
    """
    sums, zeros, initial, pools = [], [], [], []
    offset = 0
    for x in slices:
        zero, levels, sum_lx, sum_l2, pool = _q3_first_round(x, nmax, offset)
        sums.append((sum_lx, sum_l2))
        zeros.append(zero)
        initial.append(levels)
        if pool is not None:
            pools.append(pool)
        offset += x.shape[1]
    sum_lx = np.concatenate([lx for lx, _ in sums])
    sum_l2 = np.concatenate([l2 for _, l2 in sums])
    refined: list = []
    if pools:
        xs, levels, where, bits, new, slx, sl2 = (
            np.concatenate(parts, axis=-1) for parts in zip(*pools))
        state = _Q3State(xs, levels, sum_lx[where], sum_l2[where], where)
        with np.errstate(all="ignore"):
            _q3_refine(state, _Q3Moves(bits, new, slx, sl2), (sum_lx, sum_l2, refined), nmax,
                       passes=5)
    zero = np.concatenate(zeros)
    with np.errstate(all="ignore"):
        scale = np.where(sum_l2 > 0, sum_lx / sum_l2, F32(0)).astype(F32)
    scale[zero] = 0
    return Q3Fit(scale=scale, initial=initial, refined=refined, zero=zero, nmax=nmax)


def _q3_first_round(x: np.ndarray, nmax: int, offset: int):
    """Initial levels and sums of the columns of x, and their moves under them ->
    (zero, levels, sum_lx, sum_l2, pool): pool is None, or for the sub-blocks with a move
    their values, levels, columns (+ offset) and _Q3Moves fields."""
    peak, amax = signed_peak(x)
    zero = amax < GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-nmax) / peak
        levels = np.multiply(x, iscale)
        # |iscale * x| <= nmax where amax >= eps, so rint is C's nearest_int there (the
        # all-zero sub-blocks get levels 0 and scale 0 at the end)
        _clamped_levels(levels, -nmax, nmax - 1)
        terms = _q3_terms(x, levels)
        sum_lx = sequential_sum(terms[0])
        sum_l2 = sequential_sum(terms[1])
        moved, new, slx, sl2 = _q3_moved(x, levels, sum_lx, sum_l2, nmax, terms)
    active = np.flatnonzero(moved.any(axis=0) & ~zero)
    if not len(active):
        return zero, levels, sum_lx, sum_l2, None
    return zero, levels, sum_lx, sum_l2, (
        x.take(active, axis=1), levels.take(active, axis=1), active + offset,
        _move_bits(moved.take(active, axis=1)),
        *(a.take(active, axis=1) for a in (new, slx, sl2)))


def _q3_terms(x: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's per-value terms w*x[i]*L[i] and w*L[i]*L[i] (w = x*x), in its float32 order. They
    are functions of x and L alone: recomputing them is cheaper than carrying them along."""
    wl2 = x * x
    wxl = wl2 * x
    wxl *= levels
    wl2 *= levels
    wl2 *= levels
    return wxl, wl2


_VALUE_BITS = (np.uint16(1) << np.arange(16, dtype=np.uint16))[:, None]
_SIXTEEN_BITS = np.arange(1 << 16)
# the lowest set bit of a 16-bit mask (16 for none): a sub-block's next move
_LOWEST_BIT = np.where(_SIXTEEN_BITS == 0, 16, np.log2(
    np.maximum(_SIXTEEN_BITS & -_SIXTEEN_BITS, 1))).astype(np.intp)
# the values at or after a sub-block's place in its pass (index: the place, 0..16)
_FROM_VALUE = np.array([(0xFFFF << i) & 0xFFFF for i in range(17)], dtype=np.uint16)


@dataclass
class _Q3Moves:
    """Every value's C test under the current sums, per column: `bits` (bit i: value i
    would move: slx > 0 and a new level), its new level, slx and sl2 (float32 [16, m])."""
    bits: np.ndarray
    new: np.ndarray
    slx: np.ndarray
    sl2: np.ndarray


def _q3_moves(x, levels, sum_lx, sum_l2, nmax) -> _Q3Moves:
    """_Q3Moves of the columns of x under their sums."""
    moved, new, slx, sl2 = _q3_moved(x, levels, sum_lx, sum_l2, nmax)
    return _Q3Moves(_move_bits(moved), new, slx, sl2)


def _q3_moved(x, levels, sum_lx, sum_l2, nmax, terms=None):
    """Every value's C test under the sums of its column -> (moved: slx > 0 and a new
    level, bool [16, m]; new levels, slx, sl2: float32); `terms` (_q3_terms) are consumed."""
    slx, sl2 = _q3_terms(x, levels) if terms is None else terms
    np.subtract(sum_lx, slx, out=slx)
    np.subtract(sum_l2, sl2, out=sl2)
    q = x * sl2
    q /= slx  # C: x[i] * sl2 / slx; far past 2**22 where slx is tiny, hence nearest_int
    new = nearest_int_in_place(q)
    np.clip(new, _INT32[-nmax], _INT32[nmax - 1], out=new)
    new = new.astype(F32)
    moved = slx > 0
    moved &= new != levels
    return moved, new, slx, sl2


_INT32 = {k: np.int32(k) for k in range(-32, 33)}


def _move_bits(moved: np.ndarray) -> np.ndarray:
    """bool [16, m] -> uint16 [m], bit i set where value i moves (distinct bits: their sum
    is their OR)."""
    return np.add.reduce(np.multiply(moved, _VALUE_BITS, dtype=np.uint16), axis=0,
                         dtype=np.uint16)


@dataclass
class _Q3State:
    """The sub-blocks still refining (columns): values, levels, the C sums, and `where`
    (their columns in the chunk)."""
    xs: np.ndarray
    levels: np.ndarray
    sum_lx: np.ndarray
    sum_l2: np.ndarray
    where: np.ndarray

    def keep(self, kept: np.ndarray) -> None:
        self.xs, self.levels = self.xs.take(kept, axis=1), self.levels.take(kept, axis=1)
        self.sum_lx, self.sum_l2, self.where = (self.sum_lx[kept], self.sum_l2[kept],
                                                self.where[kept])

    def judge(self, rows: np.ndarray, at: np.ndarray, moves: _Q3Moves) -> np.ndarray:
        """C's test of the move at value `at` of each sub-block `rows`, in its float32
        order; applies the accepted ones and returns their rows."""
        flat = at * self.xs.shape[1] + rows
        x, new_l = self.xs.take(flat), moves.new.take(flat)
        slx, sl2 = moves.slx.take(flat), moves.sl2.take(flat)
        w = x * x
        wx = w * x
        slx += wx * new_l
        sl2 += w * new_l * new_l
        old_lx, old_l2 = self.sum_lx[rows], self.sum_l2[rows]
        take = (sl2 > 0) & (slx * slx * old_l2 > old_lx * old_lx * sl2)
        if not take.all():
            flat, rows, new_l, slx, sl2 = flat[take], rows[take], new_l[take], slx[take], sl2[take]
        self.levels.put(flat, new_l)
        self.sum_lx[rows], self.sum_l2[rows] = slx, sl2
        return rows


def _q3_refine(state: _Q3State, moves: _Q3Moves, chunk, nmax: int, passes: int) -> None:
    """The refinement passes of make_q3_quants for the sub-blocks of `state`, given their
    `moves` under their sums; results into `chunk` (sum_lx, sum_l2 of all columns, and the
    list of refined levels). Per round and sub-block: the first move at or after `start`
    (where its pass is) is judged; a sub-block with none has ended its pass, and if the pass
    changed something the next one begins under the same sums, so its first move is known
    from the same round. A sub-block is done when a pass ends unchanged, or after `passes`
    passes (the same decisions, in the same order, as the C loops)."""
    m = len(state.where)
    start = np.zeros(m, dtype=np.intp)
    passes_left = np.full(m, passes)
    changed = np.zeros(m, dtype=bool)
    all_lx, all_l2, refined = chunk
    while True:
        first = _LOWEST_BIT[moves.bits & _FROM_VALUE[start]]
        again = np.flatnonzero((first == 16) & changed & (passes_left > 1))
        if len(again):
            first[again] = _LOWEST_BIT[moves.bits[again]]
            passes_left[again] -= 1
            changed[again] = False
        has = first < 16
        judged = np.flatnonzero(has)
        at = first[judged]
        changed[state.judge(judged, at, moves)] = True
        start[judged] = at + 1
        if len(judged) < m:
            done = np.flatnonzero(~has)
            cols = state.where[done]
            refined.append((cols, state.levels.take(done, axis=1)))
            all_lx[cols], all_l2[cols] = state.sum_lx[done], state.sum_l2[done]
            if not len(judged):
                return
            state.keep(judged)
            start, passes_left, changed = start[judged], passes_left[judged], changed[judged]
            m = len(judged)
        moves = _q3_moves(state.xs, state.levels, state.sum_lx, state.sum_l2, nmax)
