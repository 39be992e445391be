"""Which GGML type each tensor gets for a requested file type, and the encoders.

The mixtures follow llama.cpp's `llama_tensor_get_type` (`src/llama-quant.cpp`; with an
importance matrix its ffn_down rules of IQ4_NL/XS, Q4_0 and Q5_0 differ, see TypePlanner):
`output` (or `token_embd` when tied) takes Q6_K; the K-quant file types raise `attn_v` /
`ffn_down` / `attn_output` on the layers llama.cpp picks (e.g. Q4_K_M: Q6_K on the layers
`use_more_bits` picks; Q3_K_M: Q5_K/Q4_K; Q2_K: Q3_K, and Q4_K for attn_v when 4+ query
heads share a KV head). A tensor whose rows are not a multiple of the type's
block falls back as llama.cpp's `tensor_type_fallback` does (Q2_K/Q3_K -> Q4_0,
Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL; F16 if not a multiple of 32).
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as FT

from .encoders import encode_type
from .quant_types import QUANT_TYPES

QUANTS = tuple(q.name for q in QUANT_TYPES)
FILE_TYPE = {q.name: FT(q.ftype) for q in QUANT_TYPES}
DEFAULT_TYPE = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0,
                "q4_1": T.Q4_1, "q5_0": T.Q5_0, "q5_1": T.Q5_1, "q2_k": T.Q2_K,
                "q3_k_s": T.Q3_K, "q3_k_m": T.Q3_K, "q3_k_l": T.Q3_K, "q4_k_s": T.Q4_K,
                "q4_k_m": T.Q4_K, "q5_k_s": T.Q5_K, "q5_k_m": T.Q5_K, "q6_k": T.Q6_K,
                "iq4_nl": T.IQ4_NL, "iq4_xs": T.IQ4_XS, "mxfp4_moe": T.MXFP4}
# llama.cpp's tensor_type_fallback: types of 256-value blocks -> a type of 32-value blocks
FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0,
            T.IQ4_XS: T.IQ4_NL}
# Approximate bytes per weight of each file type, for the free-space check before writing:
# the table's whole-file figure with a margin for small models (whose Q6_K/Q8_0 embedding
# is a large share).
BYTES_PER_WEIGHT = {q.name: q.bits_per_weight / 8 * (1.0 if q.bits_per_weight >= 8 else 1.3)
                    for q in QUANT_TYPES}


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


class TypePlanner:
    """Stateful like llama.cpp's quantize_state: counts attn_v / ffn_down in file order.

    `n_gqa` (query heads per KV head) decides Q2_K's and IQ4_NL/XS's attn_v type; `n_expert`
    (experts per MoE layer) llama.cpp's 8-expert rules (attn_k/attn_v Q8_0, attn_output Q5_K);
    `has_imatrix` (an importance matrix with at least one entry) its ffn_down rules that
    differ with one (IQ4_NL/XS, Q4_0, Q5_0)."""

    def __init__(self, quant: str, n_layers: int, has_output: bool, n_gqa: int = 1,
                 n_expert: int = 1, has_imatrix: bool = False):
        self.quant, self.n_layers, self.has_output = quant, n_layers, has_output
        self.n_gqa, self.n_expert, self.has_imatrix = n_gqa, n_expert, has_imatrix
        self.i_attn_v = 0
        self.i_ffn_down = 0

    def type_for(self, name: str, shape: tuple[int, ...]) -> T:
        """The GGML type of tensor ``name`` (numpy ``shape``: rows, cols)."""
        q = self.quant
        if len(shape) < 2 or name.endswith("_norm.weight") or name.startswith(("rope_freqs", "rope_factors")) \
                or name.endswith(".bias") or "ffn_gate_inp" in name or "ssm_conv1d" in name \
                or not name.endswith("weight"):
            # the MoE router, the state-space conv kernel and A/D (no ".weight": Mamba-2's
            # ssm_a, ssm_d): F32 in llama.cpp's converter, never quantized (its ssm ops need F32)
            return T.F32
        if q in ("f32", "f16", "bf16"):
            return DEFAULT_TYPE[q]
        cols = shape[-1]
        if q == "mxfp4_moe":  # llama.cpp: 3-D expert tensors MXFP4, everything else Q8_0
            t = T.MXFP4 if len(shape) == 3 and shape[0] > 1 else T.Q8_0
            return t if cols % 32 == 0 else T.F16
        if q == "q8_0":
            return T.Q8_0 if cols % 32 == 0 else T.F16
        t = DEFAULT_TYPE[q]
        is_output = name == "output.weight" or (not self.has_output and name == "token_embd.weight")
        if is_output:
            t = T.Q6_K  # llama.cpp: the output tensor gets Q6_K unless the file type is Q8_0
        elif "attn_v.weight" in name or "attn_qkv.weight" in name or "attn_kv_b.weight" in name:
            # llama.cpp counts a fused attn_qkv (Phi-3) as the layer's attn_v.
            t = T.Q8_0 if self.n_expert == 8 else self._attn_v_type(t, self.i_attn_v)
            self.i_attn_v += 1
        elif "attn_k.weight" in name and self.n_expert == 8:
            t = T.Q8_0
        elif "attn_output.weight" in name and self.n_expert == 8:
            t = T.Q5_K if q in ("q2_k", "q3_k_s", "q3_k_m", "iq4_nl", "q4_k_s", "q4_k_m",
                                "iq4_xs") else t
        elif "attn_output.weight" in name:
            t = {"q2_k": T.Q3_K, "q3_k_m": T.Q4_K, "q3_k_l": T.Q5_K}.get(q, t)
        elif "ffn_down" in name:
            # llama.cpp's layer_info: with experts the layer comes from the name (a layer may
            # hold ffn_down_exps and ffn_down_shexp), else from the count of ffn_down seen
            layer = _layer_of(name) if self.n_expert > 1 else self.i_ffn_down
            t = self._ffn_down_type(t, layer)
            self.i_ffn_down += 1
        if t in FALLBACK and cols % 256 != 0:
            t = FALLBACK[t]
        if t not in (T.F32, T.F16, T.BF16) and cols % 32 != 0:
            t = T.F16
        return t

    def _attn_v_type(self, t: T, i: int) -> T:
        q, n = self.quant, self.n_layers
        if q == "q2_k":
            return T.Q4_K if self.n_gqa >= 4 else T.Q3_K
        if q == "q3_k_m":
            return T.Q5_K if i < 2 else T.Q4_K
        if q == "q3_k_l":
            return T.Q5_K
        if q in ("iq4_nl", "iq4_xs") and self.n_gqa >= 4:
            return T.Q5_K
        if q in ("q4_k_m", "q5_k_m") and use_more_bits(i, n):
            return T.Q6_K
        if q == "q4_k_s" and i < 4:
            return T.Q5_K
        return t

    def _ffn_down_type(self, t: T, i: int) -> T:
        q, n = self.quant, self.n_layers
        if q == "q2_k":
            return T.Q3_K
        if q == "q3_k_m":
            return T.Q5_K if i < n // 16 else T.Q4_K
        if q == "q3_k_l":
            return T.Q5_K
        if q == "q4_k_m":
            return T.Q6_K if use_more_bits(i, n) else t
        if q in ("iq4_nl", "iq4_xs") and i < n // 8 and not self.has_imatrix:
            return T.Q5_K
        if q == "q5_k_m" and use_more_bits(i, n):
            return T.Q6_K
        if q == "q4_k_s" and i < n // 8:
            return T.Q5_K
        if q in ("q4_0", "q5_0") and i < n // 8 and self.has_imatrix:
            # llama.cpp guards the first ffn_down layers with an imatrix only, so a file
            # without one stays what it was before imatrices existed
            return T.Q4_1 if q == "q4_0" else T.Q5_1
        return t


def _layer_of(name: str) -> int:
    """The N of 'blk.N.' (llama.cpp: sscanf(name, "blk.%d.")); refused otherwise."""
    parts = name.split(".")
    if len(parts) < 3 or parts[0] != "blk" or not parts[1].isdigit():
        raise ValueError(f"cannot tell the layer of tensor {name!r}")
    return int(parts[1])


def encode(w: np.ndarray, t: T, threads: int | None = None,
           weights: np.ndarray | None = None) -> np.ndarray:
    """float32 or float16 [rows, cols] -> the tensor data of type ``t`` (encoders.encode_type,
    which takes the type's name)."""
    return encode_type(w, t.name, threads=threads, weights=weights)


def nbytes_of(shape: tuple[int, ...], t: T) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[t]
    n = int(np.prod(shape))
    return n // block * size
