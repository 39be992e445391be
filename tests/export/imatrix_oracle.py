"""llama-imatrix's collector run inside llama.cpp itself (llama-cpp-python's libllama), as a
test oracle: the scheduler's eval callback (``cb_eval``, what llama-imatrix installs) sees
every MUL_MAT / MUL_MAT_ID node of the graph llama.cpp runs on a GGUF file, and this module
adds up its inputs as tools/imatrix/imatrix.cpp ``collect_imatrix`` does: for a ``blk.*``
weight and at least 16 tokens, each column's squared input per token, counted; for
MUL_MAT_ID per routed expert (``ids``), input row ``idx % ne[1]``. Chunks run one at a
time from an empty cache with every token's logits requested, as llama-imatrix runs them.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path

import numpy as np

MAX_SRC, MAX_NAME, MAX_OP_PARAMS = 10, 64, 64


class GGMLTensor(ctypes.Structure):
    """ggml.h's struct ggml_tensor (the vendored llama.cpp's layout)."""


GGMLTensor._fields_ = [
    ("type", ctypes.c_int), ("buffer", ctypes.c_void_p),
    ("ne", ctypes.c_int64 * 4), ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int),
    ("op_params", ctypes.c_int32 * (MAX_OP_PARAMS // 4)), ("flags", ctypes.c_int32),
    ("src", ctypes.POINTER(GGMLTensor) * MAX_SRC), ("view_src", ctypes.POINTER(GGMLTensor)),
    ("view_offs", ctypes.c_size_t), ("data", ctypes.c_void_p),
    ("name", ctypes.c_char * MAX_NAME), ("extra", ctypes.c_void_p), ("padding", ctypes.c_char * 8)]


def _op_codes() -> tuple[int, int]:
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    names = {lib.ggml_op_name(i).decode(): i for i in range(60)}
    return names["MUL_MAT"], names["MUL_MAT_ID"]


def _weight_name(t: GGMLTensor) -> str:
    name = t.name.decode()
    if "#" in name:  # CUDA0#blk.0.attn_k.weight#0 -> blk.0.attn_k.weight
        name = name.split("#")[1]
    return name


def _view(t: GGMLTensor, dtype) -> np.ndarray:
    """A tensor's data as numpy [ne3, ne2, ne1, ne0] with its byte strides."""
    item = np.dtype(dtype).itemsize
    size = sum((t.ne[i] - 1) * t.nb[i] for i in range(4)) + item
    buf = (ctypes.c_char * size).from_address(t.data)
    return np.lib.stride_tricks.as_strided(
        np.frombuffer(buf, dtype=dtype), shape=tuple(t.ne[i] for i in (3, 2, 1, 0)),
        strides=tuple(t.nb[i] for i in (3, 2, 1, 0)))


class _Collector:
    def __init__(self):
        self.mul_mat, self.mul_mat_id = _op_codes()
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, np.ndarray] = {}

    def __call__(self, ptr, ask, _user) -> bool:
        t = ctypes.cast(ptr, ctypes.POINTER(GGMLTensor)).contents
        if t.op not in (self.mul_mat, self.mul_mat_id):
            return False
        src0, src1 = t.src[0].contents, t.src[1].contents
        name = _weight_name(src0)
        if ask:
            if t.op == self.mul_mat_id:
                return True
            return src1.ne[1] >= 16 and src1.type == 0 and name.startswith("blk.")
        x = _view(src1, np.float32).astype(np.float64)
        if t.op == self.mul_mat_id:
            ids = _view(t.src[2].contents, np.int32)[0, 0]  # [n_tokens, n_used]
            n_as = src0.ne[2]
            sums = self.sums.setdefault(name, np.zeros((n_as, src1.ne[0])))
            counts = self.counts.setdefault(name, np.zeros(n_as))
            for row in range(ids.shape[0]):
                for idx in range(ids.shape[1]):
                    ex = int(ids[row, idx])
                    sums[ex] += x[0, row, idx % src1.ne[1]] ** 2
                    counts[ex] += 1
            return True
        sums = self.sums.setdefault(name, np.zeros((1, src1.ne[0])))
        counts = self.counts.setdefault(name, np.zeros(1))
        sums[0] += (x.reshape(-1, src1.ne[0]) ** 2).sum(axis=0)
        counts[0] += x.size // src1.ne[0]
        return True


def llama_cpp_imatrix(path: Path, chunks: list[list[int]]) -> tuple[dict, dict]:
    """(sums [n_mat, cols] float64, counts [n_mat]) by GGUF tensor name, collected by
    llama.cpp running the GGUF at ``path`` over ``chunks`` (token ids, each its own pass)."""
    import llama_cpp as L

    collector = _Collector()
    callback = L.ggml_backend_sched_eval_callback(collector)
    n = max(len(c) for c in chunks)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        mp = L.llama_model_default_params()
        model = L.llama_model_load_from_file(str(path).encode(), mp)
        cp = L.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = max(64, n)
        cp.n_threads = cp.n_threads_batch = 1
        cp.type_k = cp.type_v = L.GGML_TYPE_F32
        cp.cb_eval, cp.cb_eval_user_data = callback, None
        ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(n, 0, 1)
    try:
        for chunk in chunks:
            L.llama_memory_clear(L.llama_get_memory(ctx), True)
            batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, i, 1
                batch.seq_id[i][0], batch.logits[i] = 0, 1
            assert L.llama_decode(ctx, batch) == 0
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)
        L.llama_model_free(model)
    return collector.sums, collector.counts
