"""Which GGML type each tensor gets for a requested file type, and the encoders.

The K-quant mixtures follow llama.cpp's `llama_tensor_get_type` (`src/llama-quant.cpp`) with no
importance matrix: Q4_K_M / Q5_K_M put `output` (or `token_embd` when tied) in Q6_K, and
`attn_v` / `ffn_down` in Q6_K on the layers `use_more_bits` picks; a tensor whose rows are not a
multiple of 256 falls back (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0; F16 if not a multiple of 32).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k")
FILE_TYPE = {"f32": FT.ALL_F32, "f16": FT.MOSTLY_F16, "bf16": FT.MOSTLY_BF16,
             "q8_0": FT.MOSTLY_Q8_0, "q4_0": FT.MOSTLY_Q4_0, "q4_k_m": FT.MOSTLY_Q4_K_M,
             "q5_k_m": FT.MOSTLY_Q5_K_M, "q6_k": FT.MOSTLY_Q6_K}
DEFAULT_TYPE = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0,
                "q4_k_m": T.Q4_K, "q5_k_m": T.Q5_K, "q6_k": T.Q6_K}
K_TYPES = (T.Q4_K, T.Q5_K, T.Q6_K)
FALLBACK = {T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}
# Approximate bytes per weight of each file type, for the free-space check before writing.
BYTES_PER_WEIGHT = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 1.07, "q4_0": 0.57,
                    "q4_k_m": 0.62, "q5_k_m": 0.72, "q6_k": 0.83}


# K-quant super-blocks per numpy pass in an export. Larger than kquants' single-thread best
# (512): the export encodes pieces in several threads, and fewer, longer numpy calls mean
# fewer GIL hand-overs between them (Q4_K_M of a 0.5B model, 2 threads: 512 -> 4.2 s,
# 2048 -> 3.0 s wall).
K_CHUNK_BLOCKS = 2048


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class TypePlanner:
    """Stateful like llama.cpp's quantize_state: counts attn_v / ffn_down in file order."""

    def __init__(self, quant: str, n_layers: int, has_output: bool):
        self.quant, self.n_layers, self.has_output = quant, n_layers, has_output
        self.i_attn_v = 0
        self.i_ffn_down = 0

    def type_for(self, name: str, shape: tuple[int, ...]) -> T:
        """The GGML type of tensor ``name`` (numpy ``shape``: rows, cols)."""
        q = self.quant
        if len(shape) < 2 or name.endswith("_norm.weight") or name.startswith("rope_freqs") \
                or name.endswith(".bias"):
            return T.F32
        if q in ("f32", "f16", "bf16"):
            return DEFAULT_TYPE[q]
        cols = shape[-1]
        if q == "q8_0":
            return T.Q8_0 if cols % 32 == 0 else T.F16
        t = DEFAULT_TYPE[q]
        is_output = name == "output.weight" or (not self.has_output and name == "token_embd.weight")
        if is_output:
            t = T.Q6_K  # llama.cpp: the output tensor gets Q6_K unless the file type is Q8_0
        elif q in ("q4_k_m", "q5_k_m"):
            # llama.cpp counts a fused attn_qkv (Phi-3) as the layer's attn_v.
            if "attn_v.weight" in name or "attn_qkv.weight" in name:
                if use_more_bits(self.i_attn_v, self.n_layers):
                    t = T.Q6_K
                self.i_attn_v += 1
            elif "ffn_down" in name:
                if use_more_bits(self.i_ffn_down, self.n_layers):
                    t = T.Q6_K
                self.i_ffn_down += 1
        if t in K_TYPES and cols % 256 != 0:
            t = FALLBACK[t]
        if t not in (T.F32, T.F16, T.BF16) and cols % 32 != 0:
            t = T.F16
        return t


def encode(w: np.ndarray, t: T, threads: int | None = None) -> np.ndarray:
    """float32 or float16 [rows, cols] -> the tensor data of type ``t`` (uint8 bytes, or
    F32/F16). float16 input gives the bytes float32 input of the same values gives."""
    if t == T.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if t == T.F16:
        return np.ascontiguousarray(w, dtype=np.float16)  # float16 in: no conversion at all
    w2 = w.reshape(-1, w.shape[-1])
    if t in K_TYPES:
        from . import kquants

        fn = {T.Q4_K: kquants.quantize_q4_k, T.Q5_K: kquants.quantize_q5_k,
              T.Q6_K: kquants.quantize_q6_k}[t]
        # float16 is converted chunk by chunk
        return fn(w2, threads=threads, chunk_blocks=K_CHUNK_BLOCKS)
    if t in (T.Q8_0, T.Q5_0):
        from . import block_quants

        fn = block_quants.quantize_q8_0 if t == T.Q8_0 else block_quants.quantize_q5_0
        return fn(w2)  # one thread: the export runs pieces side by side instead
    from gguf import quants

    # gguf-py's encoders are numpy: whole slices of 256 rows per call (fewer Python round
    # trips than its 16-row groups), slices encoded side by side in threads.
    w2 = w2.astype(np.float32, copy=False)
    rows_fn = getattr(quants, t.name).quantize_rows
    parts = np.array_split(w2, max(1, w2.shape[0] // 256))
    n = min(threads or os.cpu_count() or 1, len(parts))
    if n <= 1:
        return np.concatenate([rows_fn(part) for part in parts])
    with ThreadPoolExecutor(n) as pool:
        return np.concatenate(list(pool.map(rows_fn, parts)))


def nbytes_of(shape: tuple[int, ...], t: T) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[t]
    n = int(np.prod(shape))
    return n // block * size
