"""llama.cpp as the reference for our K-quant encoders (tests and bench/kquants.py).

`write_llama_gguf` writes a small but complete llama-architecture GGUF around weight
matrices we choose, `llama_cpp_quantize` runs llama.cpp's own quantizer
(`llama_model_quantize`, the code behind `llama-quantize`) on it, and `read_tensor_blocks`
returns every tensor's raw bytes and type so ours can be compared block by block.
Needs `gguf` and, for `llama_cpp_quantize`, `llama_cpp` (llama-cpp-python).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# llama_ftype values (llama.h)
FTYPE_ALL_F32 = 0
FTYPE_MOSTLY_F16 = 1
FTYPE_Q4_K_M = 15
FTYPE_Q5_K_M = 17
FTYPE_Q6_K = 18


@dataclass(frozen=True)
class LlamaShape:
    """Dimensions of the model written around the weights (all multiples of 256 by default)."""

    n_layers: int = 2
    hidden: int = 256
    ffn: int = 512
    n_heads: int = 4
    n_kv_heads: int = 2
    vocab: int = 512

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.n_heads * self.n_kv_heads

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """GGUF tensor name -> numpy shape [rows, cols] of every 2-D weight."""
        h, f, kv = self.hidden, self.ffn, self.kv_dim
        shapes = {"token_embd.weight": (self.vocab, h), "output.weight": (self.vocab, h)}
        for i in range(self.n_layers):
            shapes.update({
                f"blk.{i}.attn_q.weight": (h, h), f"blk.{i}.attn_k.weight": (kv, h),
                f"blk.{i}.attn_v.weight": (kv, h), f"blk.{i}.attn_output.weight": (h, h),
                f"blk.{i}.ffn_gate.weight": (f, h), f"blk.{i}.ffn_up.weight": (f, h),
                f"blk.{i}.ffn_down.weight": (h, f),
            })
        return shapes


def write_llama_gguf(path: Path, shape: LlamaShape, matrices: dict[str, np.ndarray],
                     ftype: int = FTYPE_ALL_F32) -> None:
    """Write a loadable llama GGUF whose 2-D weights are `matrices` (F32, or F16 if asked)."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type("model")
    writer.add_name("tailor-kquant-probe")
    writer.add_block_count(shape.n_layers)
    writer.add_context_length(256)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.n_heads)
    writer.add_head_count_kv(shape.n_kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(shape.hidden // shape.n_heads)
    writer.add_file_type(ftype)
    writer.add_vocab_size(shape.vocab)
    # A SentencePiece-style vocab: control tokens, then byte tokens, then plain pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581piece{i}" for i in range(shape.vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (shape.vocab - 259)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * 259 + [-float(i) for i in range(shape.vocab - 259)])
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)

    dtype = np.float16 if ftype == FTYPE_MOSTLY_F16 else np.float32
    ones = np.ones(shape.hidden, dtype=np.float32)
    for name, rows_cols in shape.matrix_shapes().items():
        if name.startswith("blk.") and name.endswith("attn_q.weight"):
            layer = name.split(".")[1]
            writer.add_tensor(f"blk.{layer}.attn_norm.weight", ones)
            writer.add_tensor(f"blk.{layer}.ffn_norm.weight", ones)
        weights = np.asarray(matrices[name])
        if weights.shape != rows_cols:
            raise ValueError(f"{name}: expected shape {rows_cols}, got {weights.shape}")
        writer.add_tensor(name, np.ascontiguousarray(weights, dtype=dtype))
    writer.add_tensor("output_norm.weight", ones)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def llama_cpp_quantize(source: Path, target: Path, ftype: int, nthread: int = 1,
                       quiet: bool = True, imatrix: dict | None = None) -> None:
    """Run llama.cpp's quantizer from `source` to `target`; `imatrix` (GGUF tensor name ->
    float32 weights per input column, flat per expert) goes in as llama-quantize --imatrix
    passes it: a NULL-terminated array of llama_model_imatrix_data.

    `quiet` hides llama.cpp's per-tensor log lines (errors still show)."""
    import ctypes

    import llama_cpp
    from llama_cpp import _logger

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = nthread
    if imatrix:
        keep = [np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for v in imatrix.values()]
        entries = (llama_cpp.llama_model_imatrix_data * (len(keep) + 1))()
        for entry, name, values in zip(entries, imatrix, keep):
            entry.name = name.encode()
            entry.data = values.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
            entry.size = values.size
        entries[len(keep)].name = None  # the terminator
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    level = _logger.logger.level
    if quiet:
        _logger.set_verbose(False)
    try:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(),
                                                params)
    finally:
        _logger.logger.setLevel(level)
    if status != 0:
        raise RuntimeError(f"llama_model_quantize({source} -> ftype {ftype}) returned {status}")


def read_tensor_blocks(path: Path) -> dict[str, tuple[str, np.ndarray]]:
    """Tensor name -> (GGML type name, raw data bytes [rows, row_bytes]) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out = {}
    for tensor in reader.tensors:
        data = np.asarray(tensor.data)
        if data.dtype != np.uint8:
            data = data.view(np.uint8).reshape(data.shape[0] if data.ndim > 1 else 1, -1)
        out[tensor.name] = (tensor.tensor_type.name, data)
    return out


def llama_cpp_quantize_rows(weights: np.ndarray, type_name: str,
                            importance: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's encoder for one GGML type (`ggml_quantize_chunk`, the calling thread) on
    float32 `weights` [rows, cols] -> uint8 [rows, row bytes]: the per-type peer of our
    encoders (bench/export.py), without a GGUF file around it. `importance`: the
    importance-matrix row [cols] every row is quantized with (its quant_weights)."""
    import ctypes

    import gguf

    lib = _ggml_base()
    t = gguf.GGMLQuantizationType[type_name]
    w = np.ascontiguousarray(weights, dtype=np.float32)
    rows, cols = w.shape
    block, size = gguf.GGML_QUANT_SIZES[t]
    out = np.empty((rows, cols // block * size), dtype=np.uint8)
    qw = None if importance is None else np.ascontiguousarray(importance, dtype=np.float32)
    written = lib.ggml_quantize_chunk(int(t), w.ctypes.data_as(ctypes.c_void_p),
                                      out.ctypes.data_as(ctypes.c_void_p), 0, rows, cols,
                                      None if qw is None else qw.ctypes.data_as(ctypes.c_void_p))
    if written != out.nbytes:
        raise RuntimeError(f"ggml_quantize_chunk({type_name}) wrote {written} bytes, "
                           f"expected {out.nbytes}")
    return out


_GGML_BASE = None


def _ggml_base():
    """libggml-base from llama-cpp-python's wheel, with ggml_quantize_chunk's signature."""
    global _GGML_BASE
    if _GGML_BASE is None:
        import ctypes

        import llama_cpp

        lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                            ctypes.c_void_p]
        _GGML_BASE = lib
    return _GGML_BASE
