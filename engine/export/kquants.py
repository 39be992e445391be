"""Q4_K, Q5_K and Q6_K encoders: llama.cpp's reference K-quants in vectorized numpy.

Blocks of 256 values ("super-blocks"), laid out exactly as llama.cpp's `block_q4_K` (144
bytes), `block_q5_K` (176) and `block_q6_K` (210) in `ggml/src/ggml-common.h`. The
algorithms follow `quantize_row_q4_K_ref`, `quantize_row_q5_K_ref` and
`quantize_row_q6_K_ref` (`ggml/src/ggml-quants.c`), which is what `llama-quantize` runs when
no importance matrix is given; tests/export/test_kquants.py compares our bytes with
llama.cpp's own quantizer.

Each function takes float32 weights [rows, cols] with cols % 256 == 0 and returns uint8
[rows, cols // 256 * block_bytes]: row r of the result is the GGUF tensor data of row r.
Work is done a chunk of blocks at a time, so extra memory is a small multiple of one chunk
and not of the tensor (plus the output). float16 input is converted chunk by chunk.

Bytes equal those of llama.cpp builds whose compiler does not fuse multiply-adds (the x86-64
wheels: libggml-base has no FMA instructions). numpy never fuses, so our bytes are the same
on every platform; a llama.cpp built with FMA contraction (clang on arm64 contracts by
default) may differ from both in rare last-bit ties.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from engine.export.fp16 import float16_to_float32
from engine.export.heap import keep_freed_buffers
from engine.export.kquants_search import (
    F32,
    GROUP_MAX_EPS,
    fit_min_scale,
    fit_q3_scale,
    fit_symmetric_scale,
    nearest_int_exact,
    nearest_int_in_place,
    signed_peak,
)

QK_K = 256
BLOCK_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
# Super-blocks per chunk: 512 blocks = 128k values, 512 KiB of float32 per work array, so a
# chunk's working set stays in a core's L2; larger is no faster, smaller pays numpy call cost.
DEFAULT_CHUNK_BLOCKS = 512

# Q3_K's first round runs on slices of this many super-blocks (its ~25 passes over the
# data stay in a core's L2), its refinement on the whole chunk at once.
Q3_SLICE_BLOCKS = 1024
# Q4_K/Q5_K/Q6_K encode slices of this many super-blocks: their searches make ~300 passes
# over a slice's work arrays (1 MiB each), which then stay in cache between passes.
SEARCH_SLICE_BLOCKS = 1024

ProgressFn = Callable[[float], None]


def quantize_q4_k(weights: np.ndarray, *, progress: ProgressFn | None = None,
                  threads: int | None = None,
                  chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> np.ndarray:
    """Q4_K blocks of `weights` [rows, cols] -> uint8 [rows, cols // 256 * 144].

    `progress(fraction)` is called after each chunk, in order, from the calling thread (it
    may raise to cancel: the exception propagates). `threads` chunks are encoded at once
    (default: the CPU count; numpy releases the GIL in its loops). The bytes never depend on
    `threads` or `chunk_blocks`. Raises ValueError when weights are not 2-D, cols % 256 != 0,
    a value is NaN or infinite, or values are too large for the fp16 super-scales (> ~1e6).
    """
    return _quantize(weights, "Q4_K", _encode_q4_k, progress, threads, chunk_blocks)


def quantize_q5_k(weights: np.ndarray, *, progress: ProgressFn | None = None,
                  threads: int | None = None,
                  chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> np.ndarray:
    """Q5_K blocks of `weights` [rows, cols] -> uint8 [rows, cols // 256 * 176]. See q4_k."""
    return _quantize(weights, "Q5_K", _encode_q5_k, progress, threads, chunk_blocks)


def quantize_q6_k(weights: np.ndarray, *, progress: ProgressFn | None = None,
                  threads: int | None = None,
                  chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> np.ndarray:
    """Q6_K blocks of `weights` [rows, cols] -> uint8 [rows, cols // 256 * 210]. See q4_k."""
    return _quantize(weights, "Q6_K", _encode_q6_k, progress, threads, chunk_blocks)


def quantize_q2_k(weights: np.ndarray, *, progress: ProgressFn | None = None,
                  threads: int | None = None,
                  chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> np.ndarray:
    """Q2_K blocks of `weights` [rows, cols] -> uint8 [rows, cols // 256 * 84]. See q4_k."""
    return _quantize(weights, "Q2_K", _encode_q2_k, progress, threads, chunk_blocks)


def quantize_q3_k(weights: np.ndarray, *, progress: ProgressFn | None = None,
                  threads: int | None = None,
                  chunk_blocks: int = DEFAULT_CHUNK_BLOCKS) -> np.ndarray:
    """Q3_K blocks of `weights` [rows, cols] -> uint8 [rows, cols // 256 * 110]. See q4_k."""
    return _quantize(weights, "Q3_K", _encode_q3_k, progress, threads, chunk_blocks)


def quantize_k(weights: np.ndarray, type_name: str, **options) -> np.ndarray:
    """Dispatch by GGML type name ("Q4_K", "Q5_K", "Q6_K"); options as for quantize_q4_k."""
    try:
        encoder = QUANTIZERS[type_name]
    except KeyError:
        raise ValueError(f"no K-quant encoder for {type_name!r}; "
                         f"known: {', '.join(QUANTIZERS)}") from None
    return encoder(weights, **options)


def _quantize(weights, type_name, encode, progress, threads, chunk_blocks) -> np.ndarray:
    keep_freed_buffers()  # work arrays reused across chunks, not faulted in afresh
    weights = np.asarray(weights)
    if weights.ndim != 2:
        raise ValueError(f"{type_name} needs a 2-D weight matrix, got shape {weights.shape}")
    rows, cols = weights.shape
    if cols % QK_K:
        raise ValueError(f"{type_name} needs a row length divisible by {QK_K}; got {cols} "
                         f"(shape {rows}x{cols})")
    if not np.issubdtype(weights.dtype, np.floating):
        raise ValueError(f"{type_name} needs floating-point weights, got {weights.dtype}")
    block_bytes = BLOCK_BYTES[type_name]
    n_blocks = rows * cols // QK_K
    out = np.empty((n_blocks, block_bytes), dtype=np.uint8)
    blocks = weights.reshape(n_blocks, QK_K)
    chunk_blocks = max(1, int(chunk_blocks))
    starts = range(0, n_blocks, chunk_blocks)

    def encode_chunk(start: int) -> int:
        chunk = _float32_chunk(blocks[start:start + chunk_blocks])
        if chunk is None:
            values = np.asarray(blocks[start:start + chunk_blocks], dtype=F32)
            bad = start + int(np.argwhere(~np.isfinite(values))[0, 0])
            raise ValueError(f"{type_name}: row {bad * QK_K // cols} holds a NaN or infinite "
                             f"value; the weights are not quantizable")
        try:
            out[start:start + len(chunk)] = encode(chunk)
        except ScaleOverflow as overflow:
            row = (start + overflow.block) * QK_K // cols
            peak = float(np.abs(chunk[overflow.block]).max())
            raise ValueError(f"{type_name}: row {row} has values up to {peak:.3g}, too large "
                             f"for the format's fp16 scales (|w| up to about 1e6 works)") from None
        return start + len(chunk)

    def report(done: int) -> None:
        if progress is not None:
            progress(done / n_blocks)

    threads = max(1, min(int(threads or os.cpu_count() or 1), len(starts)))
    if threads == 1:
        for start in starts:
            report(encode_chunk(start))
    else:
        # at most 2 chunks per thread in flight: memory stays bounded and a cancel is quick
        with ThreadPoolExecutor(threads, thread_name_prefix="kquants") as pool:
            pending: deque = deque()
            try:
                for start in starts:
                    pending.append(pool.submit(encode_chunk, start))
                    if len(pending) >= 2 * threads:
                        report(pending.popleft().result())
                while pending:
                    report(pending.popleft().result())
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return out.reshape(rows, cols // QK_K * block_bytes)


def _float32_chunk(part: np.ndarray) -> np.ndarray | None:
    """Blocks as C-contiguous float32 (float16 by integer ops: numpy's cast is 2.5x slower),
    or None when they hold a NaN or an infinity."""
    if part.dtype == np.float16:
        return float16_to_float32(part)
    chunk = np.ascontiguousarray(part, dtype=F32)
    return chunk if np.isfinite(chunk).all() else None


def _columns(blocks: np.ndarray, width: int) -> np.ndarray:
    """[n_blocks, 256] -> C-contiguous [width, n_sub]: one sub-block per column."""
    return np.ascontiguousarray(blocks.reshape(-1, width).T)


def _fp16_bytes(values: np.ndarray) -> np.ndarray:
    """float32 [n] -> round-to-nearest-even fp16, little-endian bytes [n, 2] (GGML_FP32_TO_FP16)."""
    return values.astype("<f2").view(np.uint8).reshape(-1, 2)


class ScaleOverflow(ValueError):
    """A block's fp16 super-scale overflowed; `block` is its index within the chunk."""

    def __init__(self, block: int):
        super().__init__(block)
        self.block = block


def _check_fp16_scales(*scales: np.ndarray) -> None:
    # llama.cpp writes such blocks, then refuses them ("found inf value"); so do we, earlier.
    for values in scales:
        bad = ~np.isfinite(values)
        if bad.any():
            raise ScaleOverflow(int(np.argmax(bad)))


# ---------------------------------------------------------------- Q4_K and Q5_K (scale + min)

def _in_slices(encode_slice: Callable[[np.ndarray], np.ndarray], blocks: np.ndarray,
               block_bytes: int) -> np.ndarray:
    """encode_slice on SEARCH_SLICE_BLOCKS super-blocks at a time (every block's bytes are
    its own: slicing changes none), into one [n, block_bytes] array."""
    if len(blocks) <= SEARCH_SLICE_BLOCKS:
        return encode_slice(blocks)
    out = np.empty((len(blocks), block_bytes), dtype=np.uint8)
    for lo in range(0, len(blocks), SEARCH_SLICE_BLOCKS):
        out[lo:lo + SEARCH_SLICE_BLOCKS] = encode_slice(blocks[lo:lo + SEARCH_SLICE_BLOCKS])
    return out


def _min_scale_blocks(blocks: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Shared part of Q4_K/Q5_K: 6-bit sub-block scales/mins, fp16 d/dmin and the levels."""
    n_blocks = len(blocks)
    columns = _columns(blocks, 32)
    fit = fit_min_scale(columns, nmax, rmin, rdelta, nstep)
    scales = fit.scale.reshape(n_blocks, 8)
    mins = fit.the_min.reshape(n_blocks, 8)

    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore", over="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0)).astype(F32)
    # C stores nearest_int into a uint8_t (wraps) before MIN(63, .)
    sub_scales = np.minimum(nearest_int_exact(inv_scale[:, None] * scales) & 0xFF, 63)
    sub_mins = np.minimum(nearest_int_exact(inv_min[:, None] * mins) & 0xFF, 63)
    with np.errstate(over="ignore"):
        d = (max_scale / F32(63)).astype(np.float16)
        dmin = (max_min / F32(63)).astype(np.float16)
    _check_fp16_scales(d, dmin)

    step = d.astype(F32)[:, None] * sub_scales.astype(F32)
    offset = dmin.astype(F32)[:, None] * sub_mins.astype(F32)
    x = blocks.reshape(n_blocks, 8, 32)
    with np.errstate(all="ignore"):
        scaled = x + offset[:, :, None]
        scaled /= step[:, :, None]
        levels = nearest_int_in_place(scaled)
    np.clip(levels, np.int32(0), np.int32(nmax), out=levels)
    levels = levels.astype(np.uint8)

    # A sub-block whose step is 0 keeps the levels of the search (the C `if (!d) continue`).
    kept = (step == 0).reshape(-1)
    if kept.any():
        searched = fit.levels(columns, nmax, kept).T.astype(np.uint8)
        levels.reshape(-1, 32)[kept] = searched

    header = np.empty((n_blocks, 16), dtype=np.uint8)
    header[:, 0:2] = _fp16_bytes(d)
    header[:, 2:4] = _fp16_bytes(dmin)
    header[:, 4:16] = _pack_scale_min_k4(sub_scales.astype(np.uint8), sub_mins.astype(np.uint8))
    return header, levels.reshape(n_blocks, QK_K)


def _pack_scale_min_k4(scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """Eight 6-bit scales and mins -> 12 bytes, the layout `get_scale_min_k4` reads."""
    packed = np.empty((len(scales), 12), dtype=np.uint8)
    packed[:, 0:4] = scales[:, 0:4] | ((scales[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = mins[:, 0:4] | ((mins[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (scales[:, 4:8] & 0xF) | ((mins[:, 4:8] & 0xF) << 4)
    return packed


def _encode_q4_k(blocks: np.ndarray) -> np.ndarray:
    return _in_slices(_encode_q4_k_slice, blocks, 144)


def _encode_q4_k_slice(blocks: np.ndarray) -> np.ndarray:
    header, levels = _min_scale_blocks(blocks, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
    # qs: for each 64 values, byte l = level[l] | level[l + 32] << 4
    pairs = levels.reshape(len(blocks), 4, 2, 32)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(len(blocks), 128)
    return np.concatenate([header, qs], axis=1)


def _encode_q5_k(blocks: np.ndarray) -> np.ndarray:
    return _in_slices(_encode_q5_k_slice, blocks, 176)


def _encode_q5_k_slice(blocks: np.ndarray) -> np.ndarray:
    header, levels = _min_scale_blocks(blocks, nmax=31, rmin=-0.5, rdelta=0.1, nstep=15)
    n_blocks = len(blocks)
    low = levels & 0xF
    pairs = low.reshape(n_blocks, 4, 2, 32)
    qs = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n_blocks, 128)
    # qh bit k of byte l is the fifth bit of value 32*k + l
    high = (levels >> 4).reshape(n_blocks, 8, 32)
    qh = np.zeros((n_blocks, 32), dtype=np.uint8)
    for k in range(8):
        qh |= high[:, k] << k
    return np.concatenate([header, qh, qs], axis=1)


# ---------------------------------------------------------------- Q6_K (signed scale)

def _encode_q6_k(blocks: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    """`qw`: importance weights per value, like blocks (imatrix_quants; the rest is the same)."""
    if qw is None:
        return _in_slices(_encode_q6_k_slice, blocks, 210)
    return _encode_q6_k_slice(blocks, qw)


def _encode_q6_k_slice(blocks: np.ndarray, qw: np.ndarray | None = None) -> np.ndarray:
    n_blocks = len(blocks)
    columns = _columns(blocks, 16)
    fit = fit_symmetric_scale(columns, nmax=32, weights=None if qw is None else _columns(qw, 16))
    scales = fit.scale.reshape(n_blocks, 16)

    max_scale, _ = signed_peak(np.ascontiguousarray(scales.T))  # first of equal |scale|
    zero_block = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-128) / max_scale
        d = (F32(1) / iscale).astype(np.float16)
        _check_fp16_scales(np.where(zero_block, np.float16(0), d))
        sub_scales = np.minimum(nearest_int_exact(iscale[:, None] * scales), 127)
    sub_scales = sub_scales.astype(np.int8)  # C assigns into int8_t: wraps like astype
    step = d.astype(F32)[:, None] * sub_scales.astype(F32)
    x = blocks.reshape(n_blocks, 16, 16)
    with np.errstate(all="ignore"):
        levels = nearest_int_in_place(x / step[:, :, None], offset=32)  # C: l + 32
    np.clip(levels, np.int32(0), np.int32(63), out=levels)
    levels = levels.astype(np.uint8)

    kept = ((step == 0) & ~zero_block[:, None]).reshape(-1)
    if kept.any():
        searched = fit.levels(columns, 32, kept).T.astype(np.uint8)
        levels.reshape(-1, 16)[kept] = searched

    halves = levels.reshape(n_blocks, 2, 4, 32)
    low = halves & 0xF
    high = halves >> 4
    ql = np.empty((n_blocks, 2, 2, 32), dtype=np.uint8)
    ql[:, :, 0] = low[:, :, 0] | (low[:, :, 2] << 4)
    ql[:, :, 1] = low[:, :, 1] | (low[:, :, 3] << 4)
    qh = high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)

    out = np.empty((n_blocks, 210), dtype=np.uint8)
    out[:, 0:128] = ql.reshape(n_blocks, 128)
    out[:, 128:192] = qh.reshape(n_blocks, 64)
    out[:, 192:208] = sub_scales.view(np.uint8)
    out[:, 208:210] = _fp16_bytes(d.astype(F32))
    out[zero_block] = 0
    return out


# ---------------------------------------------------------------- Q2_K (scale + min, 4-bit)

def _pack_2bit(levels: np.ndarray) -> np.ndarray:
    """Levels 0..3 [n, 256] -> qs [n, 64]: byte 32*h + l holds values 128*h + l + 32*k at
    bits 2k (quantize_row_q2_K_ref / q3_K's low two bits). Eight bytes at once as uint64s
    (a level shifted by 2k stays within its byte)."""
    quads = np.ascontiguousarray(levels, dtype=np.uint8).view(np.uint64).reshape(
        len(levels), 2, 4, 4)
    qs = quads[:, :, 0] | (quads[:, :, 1] << np.uint64(2))
    qs |= quads[:, :, 2] << np.uint64(4)
    qs |= quads[:, :, 3] << np.uint64(6)
    return qs.reshape(len(levels), 8).view(np.uint8)


def _encode_q2_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = len(blocks)
    columns = _columns(blocks, 16)
    fit = fit_min_scale(columns, 3, -0.5, 0.1, 15, weights=np.abs(columns), use_mad=True)
    scales = fit.scale.reshape(n_blocks, 16)
    mins = fit.the_min.reshape(n_blocks, 16)
    max_scale = np.maximum(scales.max(axis=1), F32(0))
    max_min = np.maximum(mins.max(axis=1), F32(0))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        inv_scale = np.where(max_scale > 0, F32(15) / max_scale, F32(0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(15) / max_min, F32(0)).astype(F32)
        # C: scales[j] = l (a uint8_t), then |= l_min << 4 (wraps like & 0xFF)
        packed = ((nearest_int_exact(inv_scale[:, None] * scales) & 0xFF)
                  | ((nearest_int_exact(inv_min[:, None] * mins) << 4) & 0xFF))
        d = (max_scale / F32(15)).astype(np.float16)
        dmin = (max_min / F32(15)).astype(np.float16)
    _check_fp16_scales(d, dmin)
    step = d.astype(F32)[:, None] * (packed & 0xF).astype(F32)
    offset = dmin.astype(F32)[:, None] * (packed >> 4).astype(F32)
    x = blocks.reshape(n_blocks, 16, 16)
    with np.errstate(all="ignore"):
        levels = nearest_int_exact((x + offset[:, :, None]) / step[:, :, None])
    np.clip(levels, 0, 3, out=levels)
    levels = levels.astype(np.uint8).reshape(-1, 16)
    kept = (step == 0).reshape(-1)  # the C `if (!d) continue`: the search's levels stay
    if kept.any():
        levels[kept] = fit.levels(columns, 3, kept).T.astype(np.uint8)
    out = np.empty((n_blocks, 84), dtype=np.uint8)
    out[:, 0:16] = packed.astype(np.uint8)
    out[:, 16:80] = _pack_2bit(levels.reshape(n_blocks, QK_K))
    out[:, 80:82] = _fp16_bytes(d.astype(F32))
    out[:, 82:84] = _fp16_bytes(dmin.astype(F32))
    return out


# ---------------------------------------------------------------- Q3_K (signed scale, 6-bit)

def _encode_q3_k(blocks: np.ndarray) -> np.ndarray:
    n_blocks = len(blocks)
    slices = range(0, n_blocks, Q3_SLICE_BLOCKS)
    fit = fit_q3_scale([_columns(blocks[lo:lo + Q3_SLICE_BLOCKS], 16) for lo in slices], 4)
    scales = fit.scale.reshape(n_blocks, 16)
    max_scale, _ = signed_peak(np.ascontiguousarray(scales.T))  # first of equal |scale|
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        iscale = F32(-32) / max_scale
        # C: int8_t l = nearest_int(.) (wraps), then MAX(-32, MIN(31, l)) + 32
        l6 = nearest_int_exact(iscale[:, None] * scales).astype(np.int8).astype(np.int32)
        l6 = np.clip(l6, -32, 31) + 32
        d = (F32(1) / iscale).astype(np.float16)
    no_scale = max_scale == 0
    l6[no_scale] = 0  # scales left at 0 (memset): each sub-block reads back as -32
    d[no_scale] = 0
    _check_fp16_scales(d)
    step = d.astype(F32)[:, None] * (l6 - 32).astype(F32)

    out = np.empty((n_blocks, 110), dtype=np.uint8)
    for lo in slices:
        part = slice(lo, lo + Q3_SLICE_BLOCKS)
        out[part, 0:96] = _q3_level_bytes(blocks[part], step[part], fit, lo * 16)
    l6 = l6.astype(np.uint8)
    packed = np.empty((n_blocks, 12), dtype=np.uint8)
    packed[:, 0:8] = (l6[:, 0:8] & 0xF) | ((l6[:, 8:16] & 0xF) << 4)
    top = l6 >> 4  # bits 4-5 of scale j go to byte 8 + j % 4 at bit 2 * (j // 4)
    packed[:, 8:12] = top[:, 0:4] | (top[:, 4:8] << 2) | (top[:, 8:12] << 4) | (top[:, 12:16] << 6)
    out[:, 96:108] = packed
    out[:, 108:110] = _fp16_bytes(d.astype(F32))
    return out


_EIGHT_BYTES = np.uint64(0x0101010101010101)
_LOW_TWO_BITS = np.uint64(0x0303030303030303)
_BIT_SHIFTS = np.arange(8, dtype=np.uint64)


def _q3_level_bytes(blocks: np.ndarray, step: np.ndarray, fit, first: int) -> np.ndarray:
    """Q3_K's hmask and qs [n, 96] of the super-blocks `blocks` ([n, 256]) with sub-block
    steps `step` [n, 16]; `first`: the fit's column of their first sub-block."""
    n_blocks = len(blocks)
    x = blocks.reshape(n_blocks, 16, 16)
    with np.errstate(all="ignore"):
        levels = nearest_int_in_place(x / step[:, :, None], offset=4)  # C: l + 4, l in -4..3
    np.clip(levels, np.int32(0), np.int32(7), out=levels)
    levels = levels.astype(np.uint8).reshape(-1, 16)
    kept = np.flatnonzero(step.reshape(-1) == 0)  # the C `if (!d) continue`: the levels
    if len(kept):                                 # make_q3_quants left stay
        levels[kept] = fit.levels(kept + first).T.astype(np.uint8)
    levels = levels.reshape(n_blocks, QK_K)
    out = np.empty((n_blocks, 96), dtype=np.uint8)
    # hmask byte m, bit b: the high bit of value 32*b + m; eight bytes m at once as a
    # uint64 (each byte's bit moves within its byte: no carries between them)
    high = levels.view(np.uint64).reshape(n_blocks, 8, 4) >> np.uint64(2)
    high &= _EIGHT_BYTES
    hmask = out[:, 0:32].view(np.uint64)
    np.copyto(hmask, high[:, 0])
    for b in range(1, 8):
        high[:, b] <<= _BIT_SHIFTS[b]
        hmask |= high[:, b]
    out[:, 32:96] = _pack_2bit((levels.view(np.uint64) & _LOW_TWO_BITS).view(np.uint8))
    return out


QUANTIZERS = {"Q2_K": quantize_q2_k, "Q3_K": quantize_q3_k, "Q4_K": quantize_q4_k,
              "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}
