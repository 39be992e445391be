"""One tensor's values -> its GGUF data in a GGML type named by its string ("Q4_K"): the
dispatch to Tailor's encoders. Imports numpy and, per type, only that type's encoder (gguf-py
only for a type Tailor has no encoder of), so an encoding worker process starts light."""
from __future__ import annotations

import os

import numpy as np

K_TYPE_NAMES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
# Types of 32-value blocks encoded by block_quants (one numpy pass per piece)
BLOCK_TYPE_NAMES = ("Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1")
# Types whose encoding is little more than a copy: worker processes cost an export of them
# more than they save (Q8_0 of a 0.4B llama, 2 cores: 1.2 s CPU in 2 threads, 2.4 in 2
# processes; F16 0.46 and 0.73 s), so the writer counts only the other types' values
COPY_LIKE_TYPE_NAMES = ("F32", "F16", "BF16", "Q8_0")
# K-quant super-blocks per numpy pass in an export. Larger than kquants' single-thread best
# (512): the export may encode pieces in several threads, and fewer, longer numpy calls mean
# fewer GIL hand-overs between them (Q4_K_M of a 0.5B model, 2 threads: 512 -> 4.2 s,
# 2048 -> 3.0 s wall).
K_CHUNK_BLOCKS = 2048


def encode_type(w: np.ndarray, type_name: str, threads: int | None = None,
                weights: np.ndarray | None = None) -> np.ndarray:
    """float32 or float16 [rows, cols] -> the tensor data of GGML type ``type_name`` (uint8
    bytes, or F32/F16). float16 input gives the bytes float32 input of the same values gives.
    ``weights``: importance-matrix rows ([cols], or [experts, cols] for [experts, rows,
    cols] input), used by the types whose llama.cpp encoder takes them (imatrix_quants)."""
    if type_name == "F32":
        return np.ascontiguousarray(w, dtype=np.float32)
    if type_name == "F16":
        return np.ascontiguousarray(w, dtype=np.float16)  # float16 in: no conversion at all
    w2 = w.reshape(-1, w.shape[-1])
    if weights is not None:
        from . import imatrix_quants

        if type_name in imatrix_quants.WEIGHTED_TYPES:
            return imatrix_quants.quantize_weighted(w2, type_name, weights)
    if type_name in K_TYPE_NAMES:
        from . import kquants

        # float16 is converted chunk by chunk
        return kquants.quantize_k(w2, type_name, threads=threads, chunk_blocks=K_CHUNK_BLOCKS)
    if type_name in ("IQ4_NL", "IQ4_XS"):
        from . import iq4_quants

        return getattr(iq4_quants, f"quantize_{type_name.lower()}")(w2)
    if type_name in BLOCK_TYPE_NAMES:
        from . import block_quants

        fn = getattr(block_quants, f"quantize_{type_name.lower()}")
        return fn(w2)  # one thread: the export runs pieces side by side instead
    return _gguf_py_rows(w2, type_name, threads)


def _gguf_py_rows(w2: np.ndarray, type_name: str, threads: int | None) -> np.ndarray:
    """gguf-py's numpy encoder (BF16, MXFP4, ...): whole slices of 256 rows per call (fewer
    Python round trips than its 16-row groups), slices encoded side by side in threads."""
    from concurrent.futures import ThreadPoolExecutor

    from gguf import quants

    w2 = w2.astype(np.float32, copy=False)
    rows_fn = getattr(quants, type_name).quantize_rows
    parts = np.array_split(w2, max(1, w2.shape[0] // 256))
    n = min(threads or os.cpu_count() or 1, len(parts))
    if n <= 1:
        return np.concatenate([rows_fn(part) for part in parts])
    with ThreadPoolExecutor(n) as pool:
        return np.concatenate(list(pool.map(rows_fn, parts)))
