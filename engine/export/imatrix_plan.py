"""Which tensors of an export get importance-matrix rows, by llama.cpp's rules
(`llama_model_quantize_impl`, src/llama-quant.cpp), and the metadata the file then carries.

The matrix maps GGUF tensor names to float32 weights per input column ([n_cols], or
[n_expert, n_cols] / flat for stacked experts): what llama-quantize passes as quant_weights.
- Any entry holding a NaN or infinite value refuses the export (llama.cpp: "imatrix
  contains non-finite value"), used or not.
- A tensor llama.cpp quantizes (its type is not F32/F16/BF16) is looked up by name: no
  entry -> quantized without ("did not find weights for ..."); an entry of another size
  than n_cols x n_expert -> refused, except token_embd, quantized without (llama.cpp
  ignores that one, as llama-imatrix never measures an embedding lookup).
- Each expert of a stacked tensor uses its own row (llama.cpp's `imatrix_for_row`).
- Only the types whose encoder takes weights keep them (Q8_0 ignores the matrix).
None of the types Tailor writes requires a matrix (llama.cpp requires one only for IQ1/IQ2
types, IQ3_XXS and Q2_K_S's Q2_K tensors).
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from gguf import GGMLQuantizationType as T

from ..events import TailorError
from .imatrix_quants import WEIGHTED_TYPES

_HINT = ("use a matrix computed for this model (llama-imatrix, or tailor export "
         "--imatrix auto)")


def attach_importance(planned: list, imatrix: Mapping[str, np.ndarray]) -> int:
    """Set ``p.importance`` ([n_mat, n_cols] float32) on every planned tensor that is
    encoded with the matrix; -> how many. Raises TailorError as llama.cpp refuses."""
    for name, values in imatrix.items():
        if not np.isfinite(np.asarray(values, dtype=np.float32)).all():
            raise TailorError(f"the importance matrix's entry for {name} holds a NaN or "
                              "infinite value", hint=_HINT)
    used = 0
    for p in planned:
        values = imatrix.get(p.name)
        if values is None or p.ggml_type in (T.F32, T.F16, T.BF16):
            continue
        n_mat = p.shape[0] if len(p.shape) == 3 else 1
        cols = p.shape[-1]
        flat = np.asarray(values, dtype=np.float32).reshape(-1)
        if flat.size != n_mat * cols:
            if p.name == "token_embd.weight":
                continue
            raise TailorError(f"the importance matrix's entry for {p.name} has {flat.size} "
                              f"values; the tensor has {n_mat * cols} "
                              f"({n_mat} x {cols} columns)" if n_mat > 1 else
                              f"the importance matrix's entry for {p.name} has {flat.size} "
                              f"values; the tensor has {cols} columns", hint=_HINT)
        if p.ggml_type.name in WEIGHTED_TYPES:
            p.importance = flat.reshape(n_mat, cols)
            used += 1
    return used


def add_imatrix_metadata(writer, imatrix) -> None:
    """The ``quantize.imatrix.*`` keys llama-quantize --imatrix writes (its kv overrides:
    strings, and integers as uint32), when the matrix says them (``gguf_metadata()``)."""
    metadata = getattr(imatrix, "gguf_metadata", None)
    for key, value in (metadata() if metadata else {}).items():
        if isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, abs(int(value)))


def imatrix_record(imatrix: Mapping[str, np.ndarray], planned: list) -> dict:
    """The export record's facts on the matrix: where it came from (``record``, if it
    says), its entries and the tensors encoded with it."""
    source = getattr(imatrix, "record", None) or {}
    record = {k: v if isinstance(v, (str, int, float, bool, list, type(None))) else str(v)
              for k, v in source.items()}
    record["entries"] = len(imatrix)
    record["tensors_weighted"] = sum(getattr(p, "importance", None) is not None
                                     for p in planned)
    return record
