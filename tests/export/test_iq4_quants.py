"""Our IQ4_NL and IQ4_XS encoders against llama.cpp itself (`llama_model_quantize`, no
importance matrix), on the edge rows of the K-quant and 32-value block tests: 256 wide
(IQ4_XS, with the Q6_K output) and 96 wide (IQ4_NL everywhere, output Q8_0)."""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from engine.export.iq4_quants import BLOCK_BYTES, KVALUES, best_index, quantize_iq4_nl, \
    quantize_iq4_xs
from engine.export.kquants_llamacpp import (
    FTYPE_ALL_F32,
    FTYPE_MOSTLY_F16,
    LlamaShape,
    llama_cpp_quantize,
    read_tensor_blocks,
    write_llama_gguf,
)

from .test_block_quants import block_edge_rows

ENCODERS = {"IQ4_NL": quantize_iq4_nl, "IQ4_XS": quantize_iq4_xs}
FTYPE_IQ4_NL, FTYPE_IQ4_XS = 25, 30  # llama_ftype (llama.h)
WIDE = LlamaShape(n_layers=2, hidden=256, ffn=512, n_heads=4, n_kv_heads=2, vocab=512)
NARROW = LlamaShape(n_layers=1, hidden=96, ffn=160, n_heads=4, n_kv_heads=2, vocab=320)


def _source(folder, shape: LlamaShape, ftype: int):
    matrices = {}
    for seed, (name, rows_cols) in enumerate(shape.matrix_shapes().items()):
        w = np.clip(block_edge_rows(*rows_cols, seed=seed + 50 * ftype), -65504, 65504)
        matrices[name] = w.astype(np.float16 if ftype else np.float32).astype(np.float32)
    path = folder / f"iq4-{shape.hidden}-{ftype}.gguf"
    write_llama_gguf(path, shape, matrices, ftype=ftype)
    return path, matrices


@pytest.mark.parametrize("source_ftype", [FTYPE_ALL_F32, FTYPE_MOSTLY_F16], ids=["f32", "f16"])
@pytest.mark.parametrize("shape,target_ftype,expected", [
    (WIDE, FTYPE_IQ4_XS, {"IQ4_XS"}), (WIDE, FTYPE_IQ4_NL, {"IQ4_NL"}),
    (NARROW, FTYPE_IQ4_XS, {"IQ4_NL"}), (NARROW, FTYPE_IQ4_NL, {"IQ4_NL"})],
    ids=["xs-256", "nl-256", "xs-96-fallback", "nl-96"])
def test_blocks_are_byte_identical_to_llama_cpp(tmp_path, source_ftype, shape, target_ftype,
                                                expected):
    pytest.importorskip("llama_cpp")
    source, matrices = _source(tmp_path, shape, source_ftype)
    target = tmp_path / "llama-cpp.gguf"
    llama_cpp_quantize(source, target, target_ftype)
    seen = set()
    for name, (type_name, theirs) in read_tensor_blocks(target).items():
        if type_name not in ENCODERS:
            continue
        seen.add(type_name)
        weights = matrices[name]
        inputs = [weights] + ([weights.astype(np.float16)] if source_ftype else [])
        for w in inputs:
            ours = ENCODERS[type_name](w)
            assert ours.shape == theirs.shape, name
            size = BLOCK_BYTES[type_name]
            differing = (ours.reshape(-1, size) != theirs.reshape(-1, size)).any(1)
            if differing.any():
                b = int(np.argmax(differing))
                qk = 32 if type_name == "IQ4_NL" else 256
                pytest.fail(f"{name} ({type_name}, {w.dtype} in): {differing.sum()} of "
                            f"{differing.size} blocks differ; first: row "
                            f"{b * qk // weights.shape[1]}")
    assert seen == expected


def test_best_index_is_llama_cpps_binary_search():
    def reference(x: float) -> int:  # best_index_int8, as written in ggml-quants.c
        v = KVALUES
        if x <= v[0]:
            return 0
        if x >= v[15]:
            return 15
        lo, hi = 0, 15
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if x < v[mid]:
                hi = mid
            else:
                lo = mid
        return hi - 1 if np.float32(x - v[hi - 1]) < np.float32(v[hi] - x) else hi

    mids = (KVALUES[:-1] + KVALUES[1:]) / 2
    near = np.concatenate([mids, np.nextafter(mids, np.float32(-np.inf)),
                           np.nextafter(mids, np.float32(np.inf)), KVALUES,
                           np.float32([-1e9, 1e9, 0.0, -0.0, 1e-30])])
    rng = np.random.default_rng(0)
    xs = np.concatenate([near, rng.uniform(-140, 140, 4000).astype(np.float32)])
    assert [int(i) for i in best_index(xs)] == [reference(float(x)) for x in xs]


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_round_trip_error_on_gaussian_weights(type_name):
    w = (np.random.default_rng(2).standard_normal((32, 1024)) * 0.02).astype(np.float32)
    r = dequantize(ENCODERS[type_name](w), GGMLQuantizationType[type_name]).reshape(w.shape)
    # 16 levels, denser near zero: ~0.09 of the weights' RMS (Q4_K: ~0.09)
    assert np.sqrt(np.mean((r - w) ** 2) / np.mean(w ** 2)) < 0.12


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_non_finite_and_bad_shapes_are_refused(type_name):
    w = np.zeros((4, 256), np.float32)
    w[2, 100] = np.nan
    with pytest.raises(ValueError, match=f"{type_name}: row 2 holds a NaN or infinite"):
        ENCODERS[type_name](w)
    with pytest.raises(ValueError, match="columns a multiple of"):
        ENCODERS[type_name](np.zeros((2, 48), np.float32))
