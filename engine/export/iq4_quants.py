"""IQ4_NL and IQ4_XS encoders: llama.cpp's 4-bit non-linear quantizers in vectorized numpy.

Both map each value to the nearest of 16 fixed levels (`kvalues_iq4nl`, denser near zero,
where most weights are) times a per-32-values scale. IQ4_NL (`block_iq4_nl`, 18 bytes) keeps
that scale as fp16; IQ4_XS (`block_iq4_xs`, 136 bytes per 256 values) stores the eight
scales of a super-block in 6 bits against one fp16 super-scale. The arithmetic is
`quantize_row_iq4_nl_impl` (`ggml/src/ggml-quants.c`) as `quantize_iq4_nl` /
`quantize_iq4_xs` call it without an importance matrix (weights x*x, 15 trial scales), which is
what `llama_model_quantize` runs; tests/export/test_iq4_quants.py compares the bytes.

Exactness: `best_index_int8` (binary search, then the nearer neighbour by
`x - v[i-1] < v[i] - x`) equals counting the midpoints (v[i-1] + v[i]) / 2 <= x: near a
midpoint both float32 differences are exact (integer levels, results no finer than x), so
the comparison is decided exactly, ties going up as in C. Sums are strictly sequential in value
order (sub-blocks are the columns of a C-contiguous array, as in kquants_search).
"""
from __future__ import annotations

import numpy as np

from .heap import keep_freed_buffers
from .kquants_search import F32, GROUP_MAX_EPS, nearest_int_exact, sequential_sum, signed_peak

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113],
                   dtype=F32)
_MIDPOINTS = (KVALUES[:-1] + KVALUES[1:]) / F32(2)  # exact: integers and halves
# index of x by floor(2x) + 256 (x in [-128, 128)): how many midpoints m have 2m <= floor(2x)
_INDEX_OF_FLOOR_2X = np.searchsorted(2 * _MIDPOINTS, np.arange(-256, 256), side="right"
                                     ).astype(np.uint8)
NTRY = 7  # quantize_iq4_nl / quantize_iq4_xs: scales -max/(127 - t) for t in -7..7 are tried
BLOCK_BYTES = {"IQ4_NL": 18, "IQ4_XS": 136}
QK = {"IQ4_NL": 32, "IQ4_XS": 256}
# Values per numpy pass: 128k (512 KiB float32 per work array), as kquants' chunks.
CHUNK_VALUES = 1 << 17


def quantize_iq4_nl(weights: np.ndarray) -> np.ndarray:
    """IQ4_NL blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 18], byte-identical to llama.cpp's quantize_iq4_nl (no imatrix).
    Raises ValueError for other shapes, NaN/inf, or scales past fp16."""
    return _quantize(weights, "IQ4_NL", _encode_iq4_nl)


def quantize_iq4_xs(weights: np.ndarray) -> np.ndarray:
    """IQ4_XS blocks of float32/float16 `weights` [rows, cols] (cols % 256 == 0) -> uint8
    [rows, cols // 256 * 136], byte-identical to llama.cpp's quantize_iq4_xs (no imatrix)."""
    return _quantize(weights, "IQ4_XS", _encode_iq4_xs)


def _quantize(weights: np.ndarray, type_name: str, encode) -> np.ndarray:
    keep_freed_buffers()  # work arrays reused across chunks, not faulted in afresh
    weights = np.asarray(weights)
    qk = QK[type_name]
    if weights.ndim != 2 or weights.shape[1] % qk:
        raise ValueError(f"{type_name} needs 2-D weights with columns a multiple of {qk}, "
                         f"got shape {weights.shape}")
    rows, cols = weights.shape
    blocks = weights.reshape(-1, qk)
    size = BLOCK_BYTES[type_name]
    out = np.empty((len(blocks), size), np.uint8)
    step = max(1, CHUNK_VALUES // qk)
    for b0 in range(0, len(blocks), step):
        chunk = np.asarray(blocks[b0:b0 + step], dtype=F32)
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = (b0 + int(np.argmin(finite))) * qk // cols
            raise ValueError(f"{type_name}: row {row} holds a NaN or infinite value; the "
                             "weights are not quantizable")
        with np.errstate(all="ignore"):
            scale = encode(chunk, out[b0:b0 + len(chunk)])
        bad = ~np.isfinite(scale)
        if bad.any():
            b = int(np.argmax(bad))
            row = (b0 + b) * qk // cols
            raise ValueError(f"{type_name}: row {row} has values up to "
                             f"{float(np.abs(chunk[b]).max()):.3g}, too large for the "
                             "format's fp16 scales")
    return out.reshape(rows, cols // qk * size)


def best_index(values: np.ndarray, scale=F32(1)) -> np.ndarray:
    """llama.cpp's best_index_int8(16, kvalues_iq4nl, x) for every x = scale * values ->
    uint8 indices (`scale` broadcasts against `values`).

    Every midpoint m is an integer or a half, so x >= m exactly when floor(2x) >= 2m: a
    table on floor(2x) gives the index (6x np.searchsorted's speed). 2 * (scale * v) is
    (2 * scale) * v exactly (a power of two commutes with rounding, subnormals aside, which
    all give index 8)."""
    y = np.multiply(values, scale * F32(2), dtype=F32)
    np.clip(y, F32(-256), F32(255), out=y)  # past the table: the end indices (NaN: 0)
    np.floor(y, out=y)
    index = y.astype(np.int16)
    index += 256
    return _INDEX_OF_FLOOR_2X.take(index)


def _sub_block_scales(x: np.ndarray, weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The scale search of quantize_row_iq4_nl_impl (weights x*x unless given: the
    importance-weighted ones, like x; ntry 7) for every column of x [32, N] -> (scale [N]
    float32, 0 where max |x| < GROUP_MAX_EPS; the signed peak)."""
    weights = x * x if weights is None else weights
    peak, amax = signed_peak(x)
    zero = amax < GROUP_MAX_EPS

    def sums(inv_scale):
        q = KVALUES.take(best_index(x, inv_scale))
        wq = weights * q
        return sequential_sum(wq * x), sequential_sum(wq * q)

    d = -peak / KVALUES[0]
    sum_qx, sum_q2 = sums(F32(1) / d)
    d = np.where(sum_q2 > 0, sum_qx / sum_q2, F32(0)).astype(F32)
    best = d * sum_qx
    for t in range(-NTRY, NTRY + 1):
        sum_qx, sum_q2 = sums(F32(t + KVALUES[0]) / peak)
        better = (sum_q2 > 0) & (sum_qx * sum_qx > best * sum_q2)
        d = np.where(better, sum_qx / sum_q2, d).astype(F32)
        best = np.where(better, d * sum_qx, best).astype(F32)
    d[zero] = 0
    return d, peak


def _pack(levels: np.ndarray, out: np.ndarray) -> None:
    """Levels [n, 32k] (0..15) -> nibbles [n, 16k]: byte 16i + j = L[32i + j] | L[32i+16+j]<<4."""
    pairs = levels.reshape(len(levels), -1, 2, 16)
    out[...] = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(len(levels), -1)


def _encode_iq4_nl(blocks: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None
                   ) -> np.ndarray:
    """blocks float32 [n, 32] -> out uint8 [n, 18]; returns the fp16 scales (as float32).
    `qw`: importance weights per value, like blocks (imatrix_quants)."""
    x = np.ascontiguousarray(blocks.T)
    d, _ = _sub_block_scales(x, None if qw is None else np.ascontiguousarray(qw.T))
    dh = d.astype(np.float16)
    out[:, 0:2] = dh.view(np.uint8).reshape(-1, 2)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    _pack(best_index(blocks, inv[:, None]), out[:, 2:])
    return dh.astype(F32)


def _encode_iq4_xs(blocks: np.ndarray, out: np.ndarray, qw: np.ndarray | None = None
                   ) -> np.ndarray:
    """blocks float32 [n, 256] -> out uint8 [n, 136]; returns the fp16 super-scales.
    `qw`: importance weights per value, like blocks (imatrix_quants)."""
    n = len(blocks)
    sub = blocks.reshape(n * 8, 32)
    sub_qw = None if qw is None else np.ascontiguousarray(qw.reshape(n * 8, 32).T)
    scales, _ = _sub_block_scales(np.ascontiguousarray(sub.T), sub_qw)
    scales = scales.reshape(n, 8)
    max_scale, _ = signed_peak(np.ascontiguousarray(scales.T))  # first of equal |scale|
    d = -max_scale / F32(32)
    dh = d.astype(np.float16)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(F32)
    levels6 = np.clip(nearest_int_exact(inv[:, None] * scales), -32, 31)
    step = d[:, None] * levels6.astype(F32)
    inv_step = np.where(step != 0, F32(1) / step, F32(0)).astype(F32)
    levels = best_index(blocks.reshape(n, 8, 32), inv_step[:, :, None])
    levels6 = (levels6 + 32).astype(np.uint16)
    out[:, 0:2] = dh.view(np.uint8).reshape(-1, 2)
    high = np.zeros(n, dtype=np.uint16)  # scales_h: bits 2i, 2i+1 = bits 4-5 of scale i
    for i in range(8):
        high |= (levels6[:, i] >> 4) << (2 * i)
    out[:, 2:4] = high.astype("<u2").view(np.uint8).reshape(-1, 2)
    low = (levels6 & 0xF).astype(np.uint8)
    out[:, 4:8] = low[:, 0::2] | (low[:, 1::2] << 4)
    _pack(levels.reshape(n, 256), out[:, 8:])
    return dh.astype(F32)
