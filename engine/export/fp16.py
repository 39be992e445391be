"""float16 -> float32 by integer operations, exact, for the encoders' chunks.

numpy's float16 cast converts value by value (~2.5 ns each here, no F16C path), which was
5% of a Q3_K export's CPU time; the same conversion in six whole-array integer operations
takes 40% of that. A half's exponent and mantissa shifted into a float32's place read as
the value times 2**-112 for normal and subnormal halves alike (a float32 subnormal times
2**112 is exact), so one multiply rescales both; the sign is put back last.
"""
from __future__ import annotations

import numpy as np

_SCALE = np.float32(2.0 ** 112)
_MAGNITUDE = np.uint32(0x7FFF)
_SIGN = np.uint32(0x8000)
_EXPONENT_ALL_ONES = 0x7C00  # inf and NaN


def float16_to_float32(half: np.ndarray) -> np.ndarray | None:
    """float16 array -> new C-contiguous float32 array of the same values and shape, or None
    when it holds an infinity or NaN (which this conversion would not keep)."""
    if not subnormals_kept():
        values = np.ascontiguousarray(half, dtype=np.float32)
        return values if np.isfinite(values).all() else None
    bits = np.ascontiguousarray(half).view(np.uint16).astype(np.uint32)
    sign = bits & _SIGN
    bits &= _MAGNITUDE
    if bits.size and bits.max() >= _EXPONENT_ALL_ONES:
        return None
    bits <<= np.uint32(13)
    values = bits.view(np.float32)
    values *= _SCALE
    sign <<= np.uint32(16)
    bits |= sign
    return values


def f16_to_f32(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    """float16 -> float32 into `out` (same shape), exact, about 6x numpy's astype here.

    The float16 bits, sign-extended to int32 and shifted left by 13, hold the exponent and
    mantissa where a float32 has them (the value times 2^-112, subnormals included) and the
    sign in bit 31; bits 28-30 are copies of the sign and are cleared. One multiply by 2^112
    rescales exactly. Infinities and NaNs come out as |x| >= 65536, which no float16 number
    reaches, so the scale checks refuse them. Falls back to astype where the CPU flushes
    subnormals (a flag some libraries set).
    """
    if not subnormals_kept():
        out[...] = h
        return out
    u = out.view(np.int32)
    np.copyto(u, h.view(np.int16), casting="unsafe")  # sign-extends
    u <<= np.int32(13)
    u &= np.int32(-0x70000001)  # ~(7 << 28)
    out *= np.float32(2.0 ** 112)
    return out


def subnormals_kept() -> bool:
    """False where the CPU flushes float32 subnormals (a flag some libraries set): both
    conversions' intermediate values would read as zero there, so they take numpy's cast."""
    return bool(np.float32(1e-45) * np.float32(2.0 ** 112) != 0)
