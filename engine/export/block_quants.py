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

Why it is faster: the per-block max/min run on a transposed copy of the piece (value j of
every block in one contiguous row), not as numpy's slow reductions over rows of 32; float16
input is converted with integer bit operations (twice numpy's astype here); the 5-bit
packing works on 8 values at once in uint64 lanes.

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

QK = 32
BLOCK_BYTES = {"Q8_0": 34, "Q5_0": 22, "Q5_1": 24, "Q4_0": 18, "Q4_1": 20}
# Blocks per numpy pass: 16384 blocks = 512k values, 2 MiB per float32 work array. Alone,
# 4096 is ~10% faster (cache); in an export, threads encode side by side and fewer, longer
# numpy calls mean fewer GIL hand-overs (Q4_K_M of a 0.5B model: 2.9 -> 2.8 s).
PIECE_BLOCKS = 16384
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
    m = min(n, PIECE_BLOCKS)
    work = _Work(np.empty((m, QK), np.float32), np.empty((QK, m), np.float32),
                 np.empty((m, QK), np.uint32))
    for b0 in range(0, n, PIECE_BLOCKS):
        b1 = min(n, b0 + PIECE_BLOCKS)
        x = blocks[b0:b1]
        if x.dtype == np.float16:
            x = f16_to_f32(x, work.x[:b1 - b0])
        # A float32-subnormal scale makes 1/d infinite and the products inf/NaN: the C code
        # casts those to integers too (undefined in C; x86-64 llama.cpp and numpy both give
        # 0, and such a block decodes to zeros whatever its quants). NaN/inf input is
        # refused below, so floating-point warnings carry no news.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            d = np.abs(encode(x, work.view(b1 - b0), out[b0:b1]))
        # NaN/inf input (float16 inf/NaN convert to >= 65536, past any float16 number), or
        # a scale past fp16 (llama.cpp writes inf scales, then refuses its own file)
        bad = ~(d <= limit_f16) if blocks.dtype == np.float16 else ~(d < _FP16_INF)
        if bad.any():
            row = (b0 + int(np.argmax(bad))) * QK // cols
            raise ValueError(f"{type_name}: row {row} holds a NaN, an infinite value or values "
                             "too large for the format's fp16 scales; not quantizable")
    return out.reshape(rows, cols // QK * size)


class _Work:
    """Reusable buffers of one piece: x (float32 rows), xt (its transpose), u (uint32 rows)."""

    def __init__(self, x: np.ndarray, xt: np.ndarray, u: np.ndarray):
        self.x, self.xt, self.u = x, xt, u

    def view(self, n: int) -> "_Work":
        return _Work(self.x[:n], self.xt[:, :n], self.u[:n])


def f16_to_f32(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 -> float32 into `out` (same shape), exact, about twice numpy's astype here.

    The float16 exponent and mantissa bits, shifted into a float32, are the value times 2^-112
    (subnormals included); one multiply by 2^112 rescales exactly. Infinities and NaNs come
    out as |x| >= 65536, which no float16 number reaches, so the scale checks refuse them.
    Falls back to astype where the CPU flushes subnormals (a flag some libraries set).
    """
    if not _subnormals_kept():
        out[...] = h
        return out
    u = out.view(np.uint32)
    np.bitwise_and(h.view(np.uint16), np.uint16(0x7FFF), out=u, casting="unsafe")
    u <<= np.uint32(13)
    out *= np.float32(2.0 ** 112)
    sign = h.view(np.uint16) >> np.uint16(15)  # the sign bit, moved to bit 31
    u |= sign.astype(np.uint32) << np.uint32(31)
    return out


def _subnormals_kept() -> bool:
    return bool(np.float32(1e-45) * np.float32(2.0 ** 112) != 0)


def _fp16(d: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Writes the fp16 bytes of the scales `d` into out [n, 2]; returns `d`."""
    out.view("<u2")[:, 0] = d.astype("<f2").view("<u2")  # one 2-byte store per block
    return d


def _inverse(d: np.ndarray) -> np.ndarray:
    """1/d, 0 where d is 0 (the C code's `d ? 1.0f/d : 0.0f`)."""
    return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def _encode_q8_0(x: np.ndarray, w: _Work, out: np.ndarray) -> np.ndarray:
    """x: float32 blocks [n, 32] (read only); out: uint8 [n, 34]. Returns the float32 scales."""
    xt = w.xt
    xt[...] = x.T  # a block's 32 values in one column: contiguous reductions
    np.abs(xt, out=xt)
    amax = xt.max(axis=0)  # NaN if the block holds one
    d = amax / np.float32(127)
    y = w.x
    np.multiply(x, _inverse(d)[:, None], out=y)
    # roundf: add 0.49999997 with the value's sign, then truncate (the int8 cast)
    np.bitwise_and(y.view(np.uint32), np.uint32(0x80000000), out=w.u)
    w.u |= _HALF_DOWN_BITS
    y += w.u.view(np.float32)
    np.copyto(out[:, 2:].view(np.int8), y, casting="unsafe")
    return _fp16(d, out[:, :2])


def _encode_q5_0(x: np.ndarray, w: _Work, out: np.ndarray) -> np.ndarray:
    """x: float32 blocks [n, 32] (read only); out: uint8 [n, 22]. Returns the float32 scales."""
    xt = w.xt
    xt[...] = x.T
    hi = xt.max(axis=0)
    lo = xt.min(axis=0)
    peak = np.where(hi >= -lo, hi, lo)  # the signed value of largest magnitude
    tie = np.flatnonzero(hi == -lo)  # +a and -a both present, or an all-zero block
    if tie.size:
        first = np.abs(x[tie]).argmax(axis=1)  # the C loop keeps the first one
        peak[tie] = x[tie, first]
        peak[tie[hi[tie] == 0]] = 0.0  # all zeros: the C loop's max stays +0.0, d = -0.0
    d = peak / np.float32(-16)
    y = w.x
    np.multiply(x, _inverse(d)[:, None], out=y)
    y += np.float32(16.5)
    q = y.astype(np.uint8)  # values lie in [0.5, 32.5]: truncates as the C int cast
    # Byte-wise work on 8 values at a time (uint64 lanes; '<u8' keeps byte k at bits 8k..).
    lanes = q.view("<u8")  # [n, 4]
    lanes -= (lanes >> np.uint64(5)) & _EACH_BYTE_1  # MIN(31, xi): 32 -> 31, the only > 31
    fifth = (lanes >> np.uint64(4)) & _EACH_BYTE_1  # bit 4 of each value, as 0/1 bytes
    # gather the 8 bytes' low bits into the top byte: bit k = value 8g + k (qh byte g)
    qh = ((fifth * _GATHER_BITS) >> np.uint64(56)).astype(np.uint8)  # [n, 4]
    out[:, 2:6].view("<u4")[:, 0] = qh.view("<u4")[:, 0]  # one 4-byte store per block
    low = lanes & _EACH_BYTE_LOW_NIBBLE
    # qs[j] = x[j] | x[j + 16] << 4, written straight into the blocks' last 16 bytes
    np.bitwise_or(low[:, :2], low[:, 2:] << np.uint64(4), out=out[:, 6:].view("<u8"))
    return _fp16(d, out[:, :2])


def _encode_q4_0(x: np.ndarray, w: _Work, out: np.ndarray) -> np.ndarray:
    """x: float32 blocks [n, 32] (read only); out: uint8 [n, 18]. Returns the float32 scales."""
    d = _signed_peak(x, w) / np.float32(-8)
    y = w.x
    np.multiply(x, _inverse(d)[:, None], out=y)
    y += np.float32(8.5)
    q = y.astype(np.uint8)  # values lie in [0.5, 16.5]: truncates as the C int8 cast
    _at_most_15(q)
    _pack_nibbles(q, out[:, 2:])
    return _fp16(d, out[:, :2])


def _encode_q4_1(x: np.ndarray, w: _Work, out: np.ndarray) -> np.ndarray:
    """x: float32 blocks [n, 32] (read only); out: uint8 [n, 20]. Returns max |x| per block
    (the check of the fp16 min; the scale, (max - min) / 15, is always smaller)."""
    q, d, lo, peak = _min_range_levels(x, w, 15)
    _at_most_15(q)  # values lie in [0, 15.5+]: 16 only from rounding at the block's max
    _pack_nibbles(q, out[:, 4:])
    _fp16(d, out[:, :2])
    _fp16(lo, out[:, 2:4])
    return peak


def _encode_q5_1(x: np.ndarray, w: _Work, out: np.ndarray) -> np.ndarray:
    """x: float32 blocks [n, 32] (read only); out: uint8 [n, 24]. Returns max |x| per block."""
    q, d, lo, peak = _min_range_levels(x, w, 31)  # (uint8_t) cast, no MIN(31, .) in C
    _pack_fifth_bits(q, out[:, 4:8], out[:, 8:])
    _fp16(d, out[:, :2])
    _fp16(lo, out[:, 2:4])
    return peak


def _signed_peak(x: np.ndarray, w: _Work) -> np.ndarray:
    """Per block: the first value of largest magnitude, signed (+0.0 for all-zero blocks)."""
    xt = w.xt
    xt[...] = x.T
    hi = xt.max(axis=0)
    lo = xt.min(axis=0)
    peak = np.where(hi >= -lo, hi, lo)
    tie = np.flatnonzero(hi == -lo)
    if tie.size:
        first = np.abs(x[tie]).argmax(axis=1)
        peak[tie] = x[tie, first]
        peak[tie[hi[tie] == 0]] = 0.0
    return peak


def _min_range_levels(x: np.ndarray, w: _Work, nmax: int):
    """Q4_1/Q5_1: levels (uint8 [n, 32], before any clamp), d, min and max |x| per block."""
    xt = w.xt
    xt[...] = x.T
    hi = xt.max(axis=0)
    lo = xt.min(axis=0)
    zero_min = np.flatnonzero(lo == 0)
    if zero_min.size:  # the first zero's sign, as the C loop keeps it
        first = (x[zero_min] == 0).argmax(axis=1)
        lo[zero_min] = x[zero_min, first]
    # (hi - lo) is +0.0 for a constant block in C (x - x); numpy's max/min of a block of
    # -0.0 and +0.0 may disagree in sign, so a zero range is made +0.0 explicitly
    span = hi - lo
    span[span == 0] = 0.0
    d = span / np.float32(nmax)
    y = w.x
    np.subtract(x, lo[:, None], out=y)
    y *= _inverse(d)[:, None]
    y += np.float32(0.5)
    q = y.astype(np.uint8)  # values >= 0.5: truncation as the C cast
    return q, d, lo, np.maximum(hi, -lo)


def _at_most_15(q: np.ndarray) -> None:
    """MIN(15, q) in place for levels q [n, 32] in 0..31 (16 is the only one reached): 8 at
    a time in uint64 lanes, subtracting bit 4 (np.minimum on the bytes: 7x as long here)."""
    lanes = q.view("<u8")
    lanes -= (lanes >> np.uint64(4)) & _EACH_BYTE_1


def _pack_nibbles(q: np.ndarray, out: np.ndarray) -> None:
    """qs[j] = q[j] | q[j + 16] << 4 for levels q [n, 32] (< 16) into out [n, 16]."""
    lanes = q.view("<u8")
    np.bitwise_or(lanes[:, :2], lanes[:, 2:] << np.uint64(4), out=out.view("<u8"))


def _pack_fifth_bits(q: np.ndarray, qh_out: np.ndarray, qs_out: np.ndarray) -> None:
    """5-bit levels q [n, 32] -> qh (bit j = bit 4 of value j) [n, 4] and nibbles [n, 16]."""
    lanes = q.view("<u8")
    fifth = (lanes >> np.uint64(4)) & _EACH_BYTE_1
    qh = ((fifth * _GATHER_BITS) >> np.uint64(56)).astype(np.uint8)
    qh_out.view("<u4")[:, 0] = qh.view("<u4")[:, 0]
    low = lanes & _EACH_BYTE_LOW_NIBBLE
    np.bitwise_or(low[:, :2], low[:, 2:] << np.uint64(4), out=qs_out.view("<u8"))
