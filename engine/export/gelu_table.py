"""llama.cpp's CPU GELU, for the MLX reference of the export check.

ggml's CPU backend computes GELU (tanh form) through a float16 lookup table (ggml-cpu vec.h
defines GGML_GELU_FP16 unconditionally): the input is rounded to float16, the table holds
float16(gelu(x)), |x| >= 10 passes (or gives 0) unrounded. That is a relative error of up to
2^-11 on every activation, which a trained Gemma 4 fixture carries to its logits as 5e-3 of
their range (measured against MLX with the same table: 6e-4; /work/notes/s4/gemma4.md) — so the
check, like its F32 KV cache, measures the file with MLX running GELU as llama.cpp's CPU
backend does, not llama.cpp's GELU precision. Only for the families whose mlx-lm model uses
the same tanh GELU as their llama.cpp graph (Gemma 1 uses the exact erf GELU in mlx-lm).
"""
from __future__ import annotations

from contextlib import contextmanager

# mlx-lm model types whose GELU llama.cpp runs as ggml_gelu / ggml_geglu (tanh form)
TABLE_GELU_MODEL_TYPES = ("gemma2", "gemma3_text", "gemma4_text", "gemma4")
NOTE = "MLX ran GELU through llama.cpp's CPU float16 table, as the file is run"


_TABLE = []  # the 65,536 float16 results, by float16 bit pattern (built on first use)


def _gelu_table():
    """ggml_table_gelu_f16 (ggml-cpu.c): float16(gelu_f32(x)) for every float16 x, computed
    in float32 with ggml's formula."""
    import mlx.core as mx
    import numpy as np

    if not _TABLE:
        f = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
        x = f.astype(np.float32)
        with np.errstate(all="ignore"):  # the NaN / inf patterns
            y = np.float32(0.5) * x * (np.float32(1.0) + np.tanh(
                np.float32(0.7978845608028654) * x * (np.float32(1.0) + np.float32(0.044715)
                                                      * x * x)))
        _TABLE.append(mx.array(y.astype(np.float16)))
    return _TABLE[0]


def table_gelu(x):
    """ggml_vec_gelu_f32 with GGML_GELU_FP16, on an MLX array."""
    import mlx.core as mx

    bits = x.astype(mx.float16).view(mx.uint16).astype(mx.uint32)
    y = _gelu_table()[bits].astype(x.dtype)
    return mx.where(x >= 10, x, mx.where(x <= -10, mx.zeros_like(x), y))


@contextmanager
def llama_cpu_gelu(model_type: str):
    """Within the block mlx-lm's Gemma 2/3/4 models use ``table_gelu``; elsewhere nothing
    changes. (Module attributes, looked up at call time: mx.compile'd callers are replaced
    whole, so no cached trace keeps the exact GELU.)"""
    if model_type not in TABLE_GELU_MODEL_TYPES:
        yield False
        return
    import mlx.nn as nn
    from mlx_lm.models import gemma4_text

    saved = nn.gelu_approx, gemma4_text.geglu
    nn.gelu_approx = table_gelu
    gemma4_text.geglu = lambda gate, x: table_gelu(gate) * x
    try:
        yield True
    finally:
        nn.gelu_approx, gemma4_text.geglu = saved
