"""Importance-weighted encoders: llama.cpp's `quantize_<type>` given an importance matrix.

With `quant_weights` (llama-quantize --imatrix: per input column, the mean of the squared
activations that column saw) llama.cpp runs other code than its reference quantizers:
`quantize_row_{q2,q3,q4,q5,q6}_K_impl`, `quantize_row_q{4,5}_{0,1}_impl` and
`quantize_row_iq4_nl_impl` (IQ4_NL, IQ4_XS) in `ggml/src/ggml-quants.c`. Each weighs value
j's error by qw[j] * sqrt(sigma2 + x[j]^2) (sigma2 a mean square of its block or row; Q6_K
takes qw[j] alone) and fits scales with those weights: `make_qkx3_quants` (scale and min),
`make_qx_quants` (signed scale) and, for the K-quants' 6-/4-bit sub-block scales,
`make_qp_quants`. Q8_0 ignores the matrix. This module is our numpy formulation of those
paths, byte-identical to llama.cpp (tests/export/test_imatrix_quants.py); the searches are
kquants_search's (which take weights) and imatrix_search's, vectorized over sub-blocks.

Entry point: `quantize_weighted(weights, type_name, importance)`.
"""
from __future__ import annotations

import numpy as np

from . import block_quants, iq4_quants
from .heap import keep_freed_buffers
from .imatrix_search import fit_qp
from .kquants import (_check_fp16_scales, _columns, _encode_q6_k, _fp16_bytes, _pack_2bit,
                      _pack_scale_min_k4, ScaleOverflow)
from .kquants_search import F32, fit_min_scale, fit_symmetric_scale, nearest_int_exact, \
    sequential_sum

# Values per numpy pass (whole rows: the row-wide sums of the 32-value types need them)
CHUNK_VALUES = 1 << 18
ALL = slice(None)


def quantize_weighted(weights: np.ndarray, type_name: str, importance: np.ndarray
                      ) -> np.ndarray:
    """float32/float16 `weights` [rows, cols] -> the GGML `type_name` data (uint8 [rows, row
    bytes]) as llama.cpp writes it given the importance matrix rows `importance`: [cols]
    for every row, or [groups, cols] for `groups` equal slices of rows (a stacked experts
    tensor: one matrix row per expert). Raises ValueError for shapes the type does not
    take, NaN/inf weights or importance, and scales past fp16."""
    keep_freed_buffers()  # work arrays reused across chunks, as the plain encoders do
    spec = SPECS.get(type_name)
    if spec is None:
        raise ValueError(f"no importance-weighted encoder for {type_name!r}; "
                         f"known: {', '.join(SPECS)}")
    w = np.asarray(weights)
    qk, size, _, _ = spec
    if w.ndim != 2 or w.shape[1] % qk:
        raise ValueError(f"{type_name} needs 2-D weights with columns a multiple of {qk}, "
                         f"got shape {w.shape}")
    rows, cols = w.shape
    groups = np.asarray(importance, dtype=F32).reshape(-1, cols)
    if rows % len(groups):
        raise ValueError(f"{type_name}: {rows} rows do not split into {len(groups)} "
                         "importance-matrix slices")
    if not np.isfinite(groups).all():
        raise ValueError(f"{type_name}: the importance matrix holds a NaN or infinite value")
    out = np.empty((rows, cols // qk * size), dtype=np.uint8)
    per_group = rows // len(groups)
    step = max(1, CHUNK_VALUES // cols)
    for g, qw in enumerate(groups):
        for r0 in range(g * per_group, (g + 1) * per_group, step):
            r1 = min((g + 1) * per_group, r0 + step)
            out[r0:r1] = _encode_rows(w[r0:r1], qw, type_name, r0)
    return out


def _encode_rows(w: np.ndarray, qw: np.ndarray, type_name: str, row0: int) -> np.ndarray:
    """Rows w [r, cols] (r0 = row0) with one importance row qw [cols] -> uint8 [r, bytes]."""
    qk, size, sigma, encode = SPECS[type_name]
    x = np.ascontiguousarray(w, dtype=F32)
    if not np.isfinite(x).all():
        bad = row0 + int(np.argwhere(~np.isfinite(x))[0, 0])
        raise ValueError(f"{type_name}: row {bad} holds a NaN or infinite value; the "
                         "weights are not quantizable")
    rows = len(x)
    if rows == 1:
        # one row (and maybe one block): numpy sums an [n, 1] array over axis 0 pairwise,
        # not in order; a second copy of the row keeps every sum strictly sequential
        x = np.concatenate([x, x])
    blocks = x.reshape(-1, qk)
    with np.errstate(all="ignore"):
        value_weights = _value_weights(x, qw, sigma).reshape(-1, qk)
        try:
            data = encode(blocks, value_weights)
        except ScaleOverflow as overflow:
            cols = x.shape[1]
            row = row0 + overflow.block * qk // cols
            peak = float(np.abs(blocks[overflow.block]).max())
            raise ValueError(f"{type_name}: row {row} has values up to {peak:.3g}, too large "
                             "for the format's fp16 scales") from None
    return data.reshape(len(x), -1)[:rows]


def _value_weights(x: np.ndarray, qw: np.ndarray, sigma) -> np.ndarray:
    """Per value: qw * sqrtf(sigma2 + x*x) ([r, cols] float32), sigma2 as the type's C code
    makes it (`sigma`: None = qw alone (Q6_K); "row": sum over the row / n_per_row; (span,
    fn): fn(sum over each span of values))."""
    if sigma is None:
        return np.ascontiguousarray(np.broadcast_to(qw, x.shape))
    square = x * x
    rows, cols = x.shape
    if sigma == "row":
        sigma2 = (sequential_sum(np.ascontiguousarray(square.T)) / F32(cols))[:, None]
        return qw * np.sqrt(sigma2 + square)
    span, of_sum = sigma
    spans = square.reshape(rows, cols // span, span)
    sums = sequential_sum(np.ascontiguousarray(spans.reshape(-1, span).T))
    sigma2 = of_sum(sums).reshape(rows, cols // span, 1)
    return (qw.reshape(-1, span) * np.sqrt(sigma2 + spans)).reshape(rows, cols)


# ---------------------------------------------------------------- 32-value types

def _signed_levels(blocks: np.ndarray, qw: np.ndarray, nmax: int):
    """make_qx_quants(32, nmax, x, L, 1, weight) per block -> (levels uint8 [n, 32], scale)."""
    x, w = np.ascontiguousarray(blocks.T), np.ascontiguousarray(qw.T)
    fit = fit_symmetric_scale(x, nmax, weights=w)
    levels = np.ascontiguousarray(fit.levels(x, nmax, ALL).T).astype(np.uint8)
    return levels, fit.scale


def _min_levels(blocks: np.ndarray, qw: np.ndarray, nmax: int):
    """make_qkx3_quants(32, nmax, x, weight, L, &min, .., -0.9, 0.05, 36) per block ->
    (levels uint8 [n, 32], scale, the stored min: -the_min, the C sign of a zero kept)."""
    x, w = np.ascontiguousarray(blocks.T), np.ascontiguousarray(qw.T)
    fit = fit_min_scale(x, nmax, -0.9, 0.05, 36, weights=w, exact_rounding=True)
    levels = np.ascontiguousarray(_search_levels(fit, x, nmax, ALL).T).astype(np.uint8)
    return levels, fit.scale, _stored_min(x, fit, nmax)


def _search_levels(fit, columns: np.ndarray, nmax: int, which) -> np.ndarray:
    """The levels make_qkx3_quants left in L for the sub-blocks `which` ([n, k] int32),
    with C's nearest_int also where |iscale * (x - min)| passes 2**22: with weights, a
    value of weight 0 may lie far outside the fitted range (its level is what the bit trick
    makes of it, not the clamp's end)."""
    with np.errstate(all="ignore"):
        scaled = fit.grid_iscale[which] * (columns[:, which] - fit.grid_min[which])
    levels = np.clip(nearest_int_exact(scaled), 0, nmax)
    levels[:, fit.flat[which]] = 0
    return levels


def _stored_min(x: np.ndarray, fit, nmax: int) -> np.ndarray:
    """-the_min, with the sign of a zero min as the C code leaves it: its `min` starts at
    x[0] and moves on `x[i] < min` only, so a zero minimum keeps the first zero's sign (the
    search's +0.0 replaces it only where a step won, which moves the scale too)."""
    stored = -fit.the_min
    with np.errstate(all="ignore"):
        first_scale = F32(1) / (F32(nmax) / x.max(axis=0))
    negative_zero = np.flatnonzero((stored == 0) & (x.min(axis=0) == 0)
                                   & (fit.scale.view(np.uint32)
                                      == np.where(fit.flat, F32(0), first_scale).view(np.uint32)))
    if len(negative_zero):
        sub = x[:, negative_zero]
        stored[negative_zero] = sub[(sub == 0).argmax(axis=0), np.arange(len(negative_zero))]
    return stored


def _fp16_checked(*values: np.ndarray) -> list[np.ndarray]:
    halves = [v.astype(np.float16) for v in values]
    _check_fp16_scales(*halves)
    return halves


def _signed_encoder(nmax: int, size: int, pack):
    """Q4_0 / Q5_0: fp16 d, then the levels as `pack(levels, out[:, 2:])` writes them."""
    def encode(blocks, qw):
        levels, scale = _signed_levels(blocks, qw, nmax)
        out = np.empty((len(blocks), size), np.uint8)
        out[:, 0:2] = _fp16_bytes(*_fp16_checked(scale))
        pack(levels, out[:, 2:])
        return out
    return encode


def _min_encoder(nmax: int, size: int, pack):
    """Q4_1 / Q5_1: fp16 d and m, then the levels as `pack(levels, out[:, 4:])` writes them."""
    def encode(blocks, qw):
        levels, scale, low = _min_levels(blocks, qw, nmax)
        out = np.empty((len(blocks), size), np.uint8)
        d, m = _fp16_checked(scale, low)
        out[:, 0:2], out[:, 2:4] = _fp16_bytes(d), _fp16_bytes(m)
        pack(levels, out[:, 4:])
        return out
    return encode


def _fifth_bits(levels, out):
    block_quants._pack_fifth_bits(levels, out[:, :4], out[:, 4:])


# ---------------------------------------------------------------- K-quants

def _requantized(x, step, offset, low: int, high: int, searched) -> np.ndarray:
    """The C requantization: nearest_int((x + offset) / step) clamped to [low, high] per
    sub-block (x [n, k, width]), minus low; where step is 0 (`if (!d) continue`) the
    search's levels stay: `searched(which)` -> [width, m] -> uint8 [n * k, width]."""
    with np.errstate(all="ignore"):
        levels = nearest_int_exact((x + offset[:, :, None]) / step[:, :, None])
    np.clip(levels, low, high, out=levels)
    levels = (levels - low).astype(np.uint8).reshape(-1, x.shape[2])
    kept = (step == 0).reshape(-1)
    if kept.any():
        levels[kept] = searched(kept).T.astype(np.uint8)
    return levels


def _super_fits(values: np.ndarray, sums: np.ndarray, nmax: int):
    """make_qp_quants over each super-block's sub-block values [n, k] -> (L [n, k], d)."""
    levels, scale = fit_qp(np.ascontiguousarray(values.T), np.ascontiguousarray(sums.T), nmax)
    return np.ascontiguousarray(levels.T), scale


def _encode_q2_k(blocks, qw):
    n = len(blocks)
    columns, wc = _columns(blocks, 16), _columns(qw, 16)
    fit = fit_min_scale(columns, 3, -0.9, 0.05, 36, weights=wc, exact_rounding=True)
    sw = sequential_sum(wc).reshape(n, 16)
    ls, dm = _super_fits(fit.scale.reshape(n, 16), sw, 15)
    lm, mm = _super_fits(fit.the_min.reshape(n, 16), sw, 15)
    d, dmin = _fp16_checked(dm, mm)
    packed = ls | (lm << 4)  # uint8: the C byte store
    step = d.astype(F32)[:, None] * (packed & 0xF).astype(F32)
    offset = dmin.astype(F32)[:, None] * (packed >> 4).astype(F32)
    levels = _requantized(blocks.reshape(n, 16, 16), step, offset, 0, 3,
                          lambda which: _search_levels(fit, columns, 3, which))
    out = np.empty((n, 84), dtype=np.uint8)
    out[:, 0:16] = packed
    out[:, 16:80] = _pack_2bit(levels.reshape(n, 256))
    out[:, 80:82], out[:, 82:84] = _fp16_bytes(d), _fp16_bytes(dmin)
    return out


def _encode_q3_k(blocks, qw):
    n = len(blocks)
    columns, wc = _columns(blocks, 16), _columns(qw, 16)
    fit = fit_symmetric_scale(columns, 4, weights=wc)
    scales = np.ascontiguousarray(fit.scale.reshape(n, 16).T)
    sw = np.ascontiguousarray(sequential_sum(wc).reshape(n, 16).T)
    super_fit = fit_symmetric_scale(scales, 32, weights=sw)
    l6 = np.ascontiguousarray(super_fit.levels(scales, 32, ALL).T).astype(np.uint8)
    (d,) = _fp16_checked(super_fit.scale)
    step = d.astype(F32)[:, None] * (l6.astype(F32) - F32(32))
    levels = _requantized(blocks.reshape(n, 16, 16), step, np.zeros_like(step), -4, 3,
                          lambda which: fit.levels(columns, 4, which)).reshape(n, 256)
    out = np.empty((n, 110), dtype=np.uint8)
    high = (levels >> 2).reshape(n, 8, 32) & 1  # hmask byte m, bit b: value 32*b + m
    out[:, 0:32] = np.bitwise_or.reduce(high << np.arange(8, dtype=np.uint8)[:, None], axis=1)
    out[:, 32:96] = _pack_2bit(levels & 3)
    top = l6 >> 4  # bits 4-5 of scale j go to byte 8 + j % 4 at bit 2 * (j // 4)
    out[:, 96:104] = (l6[:, 0:8] & 0xF) | ((l6[:, 8:16] & 0xF) << 4)
    out[:, 104:108] = top[:, 0:4] | (top[:, 4:8] << 2) | (top[:, 8:12] << 4) | (top[:, 12:] << 6)
    out[:, 108:110] = _fp16_bytes(d)
    return out


def _min_k_blocks(blocks, qw, nmax: int):
    """Q4_K/Q5_K with weights: header [n, 16] and levels [n, 256]."""
    n = len(blocks)
    columns, wc = _columns(blocks, 32), _columns(qw, 32)
    fit = fit_min_scale(columns, nmax, -0.9, 0.05, 36, weights=wc,
                        exact_rounding=True)
    sw = sequential_sum(wc).reshape(n, 8)
    ls, d_block = _super_fits(fit.scale.reshape(n, 8), sw, 63)
    lm, m_block = _super_fits(fit.the_min.reshape(n, 8), sw, 63)
    if nmax == 31:  # Q5_K stores MIN(63, .); Q4_K the byte as it is
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    d, dmin = _fp16_checked(d_block, m_block)
    packed = _pack_scale_min_k4(ls, lm)
    # what get_scale_min_k4 reads back (the stored levels unless a negative one wrapped)
    sc = np.concatenate([packed[:, 0:4] & 63, (packed[:, 8:] & 0xF) | ((packed[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([packed[:, 4:8] & 63, (packed[:, 8:] >> 4) | ((packed[:, 4:8] >> 6) << 4)], axis=1)
    step = d.astype(F32)[:, None] * sc.astype(F32)
    offset = dmin.astype(F32)[:, None] * mn.astype(F32)
    levels = _requantized(blocks.reshape(n, 8, 32), step, offset, 0, nmax,
                          lambda which: _search_levels(fit, columns, nmax, which))
    header = np.empty((n, 16), dtype=np.uint8)
    header[:, 0:2], header[:, 2:4], header[:, 4:16] = _fp16_bytes(d), _fp16_bytes(dmin), packed
    return header, levels.reshape(n, 256)


def _encode_q4_k(blocks, qw):
    header, levels = _min_k_blocks(blocks, qw, 15)
    pairs = levels.reshape(len(blocks), 4, 2, 32)  # byte l of 64 values: l | (l + 32) << 4
    return np.concatenate([header, (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(-1, 128)],
                          axis=1)


def _encode_q5_k(blocks, qw):
    header, levels = _min_k_blocks(blocks, qw, 31)
    n = len(blocks)
    pairs = (levels & 0xF).reshape(n, 4, 2, 32)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n, 128)
    high = (levels >> 4).reshape(n, 8, 32)  # qh bit k of byte l: bit 4 of value 32k + l
    qh = np.bitwise_or.reduce(high << np.arange(8, dtype=np.uint8)[:, None], axis=1)
    return np.concatenate([header, qh, qs], axis=1)


def _encode_iq4(type_name: str):
    encode = getattr(iq4_quants, f"_encode_{type_name.lower()}")

    def run(blocks, qw):
        out = np.empty((len(blocks), iq4_quants.BLOCK_BYTES[type_name]), np.uint8)
        scale = encode(blocks, out, qw)
        bad = ~np.isfinite(scale)
        if bad.any():
            raise ScaleOverflow(int(np.argmax(bad)))
        return out
    return run


def _mean_square(n: int):
    return lambda s: s / F32(n)


def _twice_mean_square(n: int):
    """Q3_K..Q5_K: 2*sum_x2/QK_K; IQ4: sum * (2.f/size), the same float32 value."""
    return lambda s: F32(2) * s / F32(n)


# type -> (values per block, bytes per block, how sigma2 is made, block encoder)
SPECS = {
    "Q2_K": (256, 84, (256, _mean_square(256)), _encode_q2_k),
    "Q3_K": (256, 110, (256, _twice_mean_square(256)), _encode_q3_k),
    "Q4_K": (256, 144, (256, _twice_mean_square(256)), _encode_q4_k),
    "Q5_K": (256, 176, (256, _twice_mean_square(256)), _encode_q5_k),
    "Q6_K": (256, 210, None, _encode_q6_k),
    "Q4_0": (32, 18, "row", _signed_encoder(8, 18, block_quants._pack_nibbles)),
    "Q4_1": (32, 20, "row", _min_encoder(15, 20, block_quants._pack_nibbles)),
    "Q5_0": (32, 22, "row", _signed_encoder(16, 22, _fifth_bits)),
    "Q5_1": (32, 24, "row", _min_encoder(31, 24, _fifth_bits)),
    "IQ4_NL": (32, 18, (32, _twice_mean_square(32)), _encode_iq4("IQ4_NL")),
    "IQ4_XS": (256, 136, (256, _twice_mean_square(256)), _encode_iq4("IQ4_XS")),
}
WEIGHTED_TYPES = frozenset(SPECS)
