"""Q8_0, Q5_0, Q5_1, Q4_0 and Q4_1 encoders: llama.cpp's reference quantizers in
vectorized numpy.

Blocks of 32 values, laid out as llama.cpp's `block_q8_0` (fp16 scale + 32 int8, 34 bytes),
`block_q5_0` (fp16 scale, 4 bytes of fifth bits, 16 bytes of nibbles: 22 bytes), `block_q5_1`
(fp16 scale and min, fifth bits, nibbles: 24), `block_q4_0` (scale, nibbles: 18) and
`block_q4_1` (scale, min, nibbles: 20), with the arithmetic of `quantize_row_<type>_ref`
(`ggml/src/ggml-quants.c`), which `llama_model_quantize` runs for these types when no
importance matrix is given. A K-quant export of a model whose rows are not a multiple of 256
is mostly these types (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0), so they
are worth being fast: about 2-3x gguf-py's encoders, with the same bytes.

Why it is faster: a piece of blocks is held in lane order, value 4L+k of block b at
[L, b, k] (`_Lanes`): the per-block max/min, scaling and rounding then run as long
contiguous loops over [8, blocks*4] rows, where the row layout [blocks, 32] makes numpy run
32 (or 4) values per inner loop; the transposes into and out of that order move 8- and
4-byte lanes, not single values. float16 input is converted with integer bit operations
(6x numpy's astype here); levels are packed 4 or 8 at a time in uint32/uint64 lanes. Each
piece is 8192 blocks (1 MiB per float32 array: a core's L2).

Exactness (every step is a float32 operation in the C code's order, no fused multiply-add):
- roundf (half away from zero) is trunc(x + copysign(0.49999997, x)): exact for |x| < 2^22
  (x + 0.5 would round 0.49999997 up to 1.0); Q8_0's |x| <= 127.
- Q5_0's scale is the first value of largest magnitude, signed; when a block's largest
  magnitude occurs with both signs the first occurrence decides (rare: found with argmax). An
  all-zero block has max = +0.0, so d = -0.0 (fp16 0x8000) as in llama.cpp (gguf-py takes the
  first element's sign there, so its bytes differ from llama.cpp's for a leading -0.0).
- Q4_1/Q5_1 store the block's min: when it is zero, its sign is the first zero's in the block
  (the C loop's `v < min` keeps the first of -0.0 and +0.0); numpy's min may pick either.
- fp16 scales round to nearest even in numpy as in ggml's FP32_TO_FP16.
- A block whose values are all below ~1e-36 has a float32-subnormal scale, 1/d overflows and
  the C code casts inf/NaN or out-of-range floats to integers: undefined in C. On x86-64
  llama.cpp and numpy give the same bytes (tested with 1e-40 rows); such a block decodes to
  zeros whatever its quants, since its fp16 scale is 0.
"""
from __future__ import annotations

import numpy as np

from .fp16 import f16_to_f32
from .heap import keep_freed_buffers

QK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q5_0": 22, "Q5_1": 24, "Q4_0": 18, "Q4_1": 20}
# Blocks per numpy pass: 8192 blocks = 256k values, 1 MiB per float32 work array.
PIECE_BLOCKS = 8192
# The float32 just below 0.5: adding it and truncating rounds half away from zero exactly.
_HALF_DOWN = np.float32(np.nextafter(np.float32(0.5), np.float32(0)))
_HALF_DOWN_BITS = np.float32(_HALF_DOWN).view(np.uint32)
# d = amax / 127 (Q8_0), |max| / 16 (Q5_0); fp16 rounds scales from 65520 up to inf
# (Q4_1/Q5_1 check the block's min and range instead: see _range_limit)
_DIVISOR = {"Q8_0": np.float32(127), "Q5_0": np.float32(16), "Q4_0": np.float32(8),
            "Q5_1": np.float32(1), "Q4_1": np.float32(1)}
_FP16_INF = np.float32(65520)
_EACH_BYTE_1 = np.uint64(0x0101010101010101)
_EACH_BYTE_LOW_NIBBLE = np.uint64(0x0F0F0F0F0F0F0F0F)
# (byte k of a uint64 is 0 or 1) times this has bit k of its top byte = byte k (no carries)
_GATHER_BITS = np.uint64(0x0102040810204080)
# (bytes b0..b3 of a uint32, each 0 or 1) times this has b_k at bit 28 + k (no carries)
_GATHER_4_BITS = np.uint32(0x10204080)
_EACH_BYTE_1_U32 = np.uint32(0x01010101)
_LOW_NIBBLES_U32 = np.uint32(0x0F0F0F0F)
_HIGH_NIBBLES_U32 = np.uint32(0xF0F0F0F0)


def quantize_q8_0(weights: np.ndarray) -> np.ndarray:
    """Q8_0 blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 34], byte-identical to llama.cpp's quantize_row_q8_0_ref."""
    return _quantize(weights, "Q8_0", _encode_q8_0)


def quantize_q5_0(weights: np.ndarray) -> np.ndarray:
    """Q5_0 blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 22], byte-identical to llama.cpp's quantize_row_q5_0_ref."""
    return _quantize(weights, "Q5_0", _encode_q5_0)


def quantize_q5_1(weights: np.ndarray) -> np.ndarray:
    """Q5_1 blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 24], byte-identical to llama.cpp's quantize_row_q5_1_ref."""
    return _quantize(weights, "Q5_1", _encode_q5_1)


def quantize_q4_0(weights: np.ndarray) -> np.ndarray:
    """Q4_0 blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 18], byte-identical to llama.cpp's quantize_row_q4_0_ref."""
    return _quantize(weights, "Q4_0", _encode_q4_0)


def quantize_q4_1(weights: np.ndarray) -> np.ndarray:
    """Q4_1 blocks of float32/float16 `weights` [rows, cols] (cols % 32 == 0) -> uint8
    [rows, cols // 32 * 20], byte-identical to llama.cpp's quantize_row_q4_1_ref."""
    return _quantize(weights, "Q4_1", _encode_q4_1)


def _quantize(weights: np.ndarray, type_name: str, encode) -> np.ndarray:
    keep_freed_buffers()  # work arrays reused across pieces, not faulted in afresh
    if weights.ndim != 2 or weights.shape[1] % QK:
        raise ValueError(f"{type_name} needs 2-D weights with columns a multiple of {QK}, "
                         f"got shape {weights.shape}")
    if weights.dtype not in (np.float32, np.float16):
        weights = weights.astype(np.float32)
    rows, cols = weights.shape
    blocks = np.ascontiguousarray(weights).reshape(-1, QK)
    limit_f16 = np.float32(65504) / _DIVISOR[type_name]  # the largest float16's scale
    n = blocks.shape[0]
    size = BLOCK_BYTES[type_name]
    out = np.empty((n, size), np.uint8)
    for b0 in range(0, n, PIECE_BLOCKS):
        b1 = min(n, b0 + PIECE_BLOCKS)
        # A float32-subnormal scale makes 1/d infinite and the products inf/NaN: the C code
        # casts those to integers too (undefined in C; x86-64 llama.cpp and numpy both give
        # 0, and such a block decodes to zeros whatever its quants). NaN/inf input is
        # refused below, so floating-point warnings carry no news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            d = np.abs(encode(_Lanes(blocks[b0:b1]), out[b0:b1]))
        # NaN/inf input (float16 inf/NaN convert to >= 65536, past any float16 number), or
        # a scale past fp16 (llama.cpp writes inf scales, then refuses its own file)
        # (the max is NaN where any d is: one pass, the failing block found only on failure)
        worst = d.max()
        if not (worst <= limit_f16 if blocks.dtype == np.float16 else worst < _FP16_INF):
            bad = ~(d <= limit_f16) if blocks.dtype == np.float16 else ~(d < _FP16_INF)
            row = (b0 + int(np.argmax(bad))) * QK // cols
            raise ValueError(f"{type_name}: row {row} holds a NaN, an infinite value or values "
                             "too large for the format's fp16 scales; not quantizable")
    return out.reshape(rows, cols // QK * size)


class _Lanes:
    """One piece of m blocks in lane order: `x` float32 [8, m, 4] holds values 4L..4L+3 of
    block b at [L, b]; `rows` is the piece as given ([m, 32], float16 or float32)."""

    def __init__(self, rows: np.ndarray):
        m = len(rows)
        self.rows, self.m = rows, m
        self.x = np.empty((8, m, 4), np.float32)
        if rows.dtype == np.float16:
            lanes = np.empty((8, m), np.int64)  # 4 float16 per lane
            np.copyto(lanes, rows.view(np.int64).T)
            f16_to_f32(lanes.view(np.float16).reshape(8, m, 4), self.x)
        else:
            np.copyto(self.x.view(np.complex128).reshape(8, m),  # 4 float32 per lane
                      rows.view(np.complex128).T)

    def flat(self) -> np.ndarray:
        """x as [8, m*4]: every row one contiguous loop."""
        return self.x.reshape(8, self.m * 4)

    def each(self, per_block: np.ndarray) -> np.ndarray:
        """[m] -> [m*4] (each value 4 times), to broadcast along flat()'s rows."""
        repeated = np.empty((self.m, 4), per_block.dtype)
        for k in range(4):  # 4 strided stores: half np.repeat's time here
            repeated[:, k] = per_block
        return repeated.reshape(-1)

    def reduce(self, ufunc, values: np.ndarray | None = None) -> np.ndarray:
        """ufunc (np.maximum/np.minimum) over each block's 32 values -> [m]."""
        r = ufunc.reduce(self.x if values is None else values, axis=0)  # [m, 4]
        out = ufunc(r[:, 0], r[:, 1])
        ufunc(out, r[:, 2], out=out)
        return ufunc(out, r[:, 3], out=out)

    def first(self, blocks: np.ndarray, test) -> np.ndarray:
        """For the blocks `blocks`: their first value v (in block order) with test(v) true."""
        x = self.rows[blocks].astype(np.float32)
        return x[np.arange(len(blocks)), test(x).argmax(axis=1)]

    def levels(self, offset: np.ndarray | None, inverse: np.ndarray,
               bias: float) -> np.ndarray:
        """trunc((x - offset) * inverse + bias) per block, as uint8 [8, m, 4] (in place on x;
        the C int casts of values >= 0 truncate)."""
        y = self.flat()
        if offset is not None:
            y -= self.each(offset)
        y *= self.each(inverse)
        y += np.float32(bias)
        return self.x.astype(np.uint8)


def _fp16(d: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Writes the fp16 bytes of the scales `d` into out [n, 2]; returns `d`."""
    out.view("<u2")[:, 0] = d.astype("<f2").view("<u2")  # one 2-byte store per block
    return d


def _inverse(d: np.ndarray) -> np.ndarray:
    """1/d, 0 where d is 0 (the C code's `d ? 1.0f/d : 0.0f`)."""
    return np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)


def _encode_q8_0(x: _Lanes, out: np.ndarray) -> np.ndarray:
    """out: uint8 [m, 34]. Returns the float32 scales."""
    amax = x.reduce(np.maximum, np.abs(x.x))  # NaN if the block holds one
    d = amax / np.float32(127)
    y = x.flat()
    y *= x.each(_inverse(d))
    # roundf: add 0.49999997 with the value's sign, then truncate (the int8 cast)
    half = np.bitwise_and(y.view(np.uint32), np.uint32(0x80000000))
    half |= _HALF_DOWN_BITS
    y += half.view(np.float32)
    q = np.empty((8, x.m, 4), np.int8)
    np.copyto(q, x.x, casting="unsafe")
    _lanes_to_blocks(q.reshape(8, -1).view("<u4"), out[:, 2:])
    return _fp16(d, out[:, :2])


def _encode_q5_0(x: _Lanes, out: np.ndarray) -> np.ndarray:
    """out: uint8 [m, 22]. Returns the float32 scales."""
    d = _signed_peak(x) / np.float32(-16)  # all zeros: +0.0, so d = -0.0 as in C
    q = x.levels(None, _inverse(d), 16.5)  # values lie in [0.5, 32.5]
    lanes = q.reshape(-1).view("<u8")  # 8 values per uint64 ('<u8': byte k at bits 8k..)
    lanes -= (lanes >> np.uint64(5)) & _EACH_BYTE_1  # MIN(31, xi): 32 -> 31, the only > 31
    _pack_lanes_5bit(q, out[:, 2:6], out[:, 6:])
    return _fp16(d, out[:, :2])


def _encode_q4_0(x: _Lanes, out: np.ndarray) -> np.ndarray:
    """out: uint8 [m, 18]. Returns the float32 scales."""
    d = _signed_peak(x) / np.float32(-8)
    q = x.levels(None, _inverse(d), 8.5)  # values lie in [0.5, 16.5]
    _at_most_15(q)
    _pack_lanes_4bit(q, out[:, 2:])
    return _fp16(d, out[:, :2])


def _encode_q4_1(x: _Lanes, out: np.ndarray) -> np.ndarray:
    """out: uint8 [m, 20]. Returns max |x| per block (the check of the fp16 min; the scale,
    (max - min) / 15, is always smaller)."""
    q, d, lo, peak = _min_range_levels(x, 15)
    # The top level is fl(fl(span * fl(1 / fl(span / 15))) + 0.5) < 15(1 + 4 eps) + 0.5 < 16
    # for a normal float32 d; float16 input has spans >= 2^-24 (or 0), so d is normal there and
    # MIN(15) changes nothing. float32 input may have subnormal d (1/d inexact or inf).
    if x.rows.dtype != np.float16:
        _at_most_15(q)
    _pack_lanes_4bit(q, out[:, 4:])
    _fp16(d, out[:, :2])
    _fp16(lo, out[:, 2:4])
    return peak


def _encode_q5_1(x: _Lanes, out: np.ndarray) -> np.ndarray:
    """out: uint8 [m, 24]. Returns max |x| per block."""
    q, d, lo, peak = _min_range_levels(x, 31)  # (uint8_t) cast, no MIN(31, .) in C
    _pack_lanes_5bit(q, out[:, 4:8], out[:, 8:])
    _fp16(d, out[:, :2])
    _fp16(lo, out[:, 2:4])
    return peak


def _signed_peak(x: _Lanes) -> np.ndarray:
    """Per block: the first value of largest magnitude, signed (+0.0 for all-zero blocks)."""
    hi = x.reduce(np.maximum)
    lo = x.reduce(np.minimum)
    neg_lo = -lo
    peak = np.where(hi >= neg_lo, hi, lo)
    tie = np.flatnonzero(hi == neg_lo)  # +a and -a both present, or an all-zero block
    if tie.size:
        peak[tie] = x.first(tie, lambda v: np.abs(v) == np.abs(v).max(axis=1, keepdims=True))
        peak[tie[hi[tie] == 0]] = 0.0  # all zeros: the C loop's max stays +0.0
    return peak


def _min_range_levels(x: _Lanes, nmax: int):
    """Q4_1/Q5_1: levels (uint8 [8, m, 4], before any clamp), d, min and max |x| per block."""
    hi = x.reduce(np.maximum)
    lo = x.reduce(np.minimum)
    zero_min = np.flatnonzero(lo == 0)
    if zero_min.size:  # the first zero's sign, as the C loop keeps it
        lo[zero_min] = x.first(zero_min, lambda v: v == 0)
    # (hi - lo) is +0.0 for a constant block in C (x - x); numpy's max/min of a block of
    # -0.0 and +0.0 may disagree in sign, so a zero range is made +0.0 explicitly
    span = hi - lo
    span[span == 0] = 0.0
    d = span / np.float32(nmax)
    q = x.levels(lo, _inverse(d), 0.5)  # values >= 0.5: truncation as the C cast
    return q, d, lo, np.maximum(hi, -lo)


def _at_most_15(q: np.ndarray) -> None:
    """MIN(15, q) in place for levels q in 0..31 (16 is the only one reached): 8 at a time
    in uint64 lanes, subtracting bit 4 (np.minimum on the bytes: 7x as long here)."""
    lanes = q.reshape(-1).view("<u8")
    lanes -= (lanes >> np.uint64(4)) & _EACH_BYTE_1


def _lanes_to_blocks(lanes: np.ndarray, out: np.ndarray) -> None:
    """uint32 lanes [k, m] (lane j: bytes 4j..4j+3 of every block) -> out [m, 4k]."""
    dest = out.view("<u4")
    for j in range(len(lanes)):  # one strided column each: long loops, not [m, k] blocks
        dest[:, j] = lanes[j]


def _pack_lanes_4bit(q: np.ndarray, out: np.ndarray) -> None:
    """Levels q [8, m, 4] (< 16) -> qs [m, 16]: byte j = q[j] | q[j + 16] << 4."""
    lanes = q.reshape(8, -1).view("<u4")  # 4 values per uint32
    _lanes_to_blocks(lanes[:4] | (lanes[4:] << np.uint32(4)), out)


def _pack_lanes_5bit(q: np.ndarray, qh_out: np.ndarray, qs_out: np.ndarray) -> None:
    """5-bit levels q [8, m, 4] -> qh (bit j = bit 4 of value j) [m, 4], nibbles [m, 16]."""
    lanes = q.reshape(8, -1).view("<u4")
    fifth = (lanes >> np.uint32(4)) & _EACH_BYTE_1_U32
    nibble = (fifth * _GATHER_4_BITS) >> np.uint32(28)  # bit k: value 4L + k
    nibble <<= (np.arange(8, dtype=np.uint32) * np.uint32(4))[:, None]
    qh_out.view("<u4")[:, 0] = np.bitwise_or.reduce(nibble, axis=0)
    low = lanes[:4] & _LOW_NIBBLES_U32
    low |= (lanes[4:] << np.uint32(4)) & _HIGH_NIBBLES_U32
    _lanes_to_blocks(low, qs_out)


def _pack_nibbles(q: np.ndarray, out: np.ndarray) -> None:
    """qs[j] = q[j] | q[j + 16] << 4 for levels q [n, 32] (< 16) into out [n, 16]."""
    lanes = q.view("<u8")
    dest = out.view("<u8")
    # one lane column at a time: numpy's loops over [n, 2] blocks run 2 values per call
    for k in range(2):
        np.bitwise_or(lanes[:, k], lanes[:, k + 2] << np.uint64(4), out=dest[:, k])


def _pack_fifth_bits(q: np.ndarray, qh_out: np.ndarray, qs_out: np.ndarray) -> None:
    """5-bit levels q [n, 32] -> qh (bit j = bit 4 of value j) [n, 4] and nibbles [n, 16]."""
    lanes = q.view("<u8")
    fifth = (lanes >> np.uint64(4)) & _EACH_BYTE_1
    qh = ((fifth * _GATHER_BITS) >> np.uint64(56)).astype(np.uint8)
    qh_out.view("<u4")[:, 0] = qh.view("<u4")[:, 0]
    _pack_nibbles((lanes & _EACH_BYTE_LOW_NIBBLE).view(np.uint8), qs_out)
