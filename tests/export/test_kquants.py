"""Our K-quant encoders against llama.cpp itself, and their round trip through gguf-py.

The judge is llama.cpp's own quantizer (`llama_model_quantize`, no importance matrix): we
write a small llama GGUF whose weights cover the awkward cases (zero, constant, tiny and huge
rows, outliers, sub-blocks of very different magnitude, exact rounding ties), let llama.cpp
quantize it to Q4_K_M, Q5_K_M and Q6_K, and require our bytes to equal its bytes for every
Q4_K, Q5_K and Q6_K tensor.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from engine.export import kquants
from engine.export.kquants_llamacpp import (
    FTYPE_ALL_F32,
    FTYPE_MOSTLY_F16,
    FTYPE_Q4_K_M,
    FTYPE_Q5_K_M,
    FTYPE_Q6_K,
    LlamaShape,
    llama_cpp_quantize,
    read_tensor_blocks,
    write_llama_gguf,
)
from engine.export.kquants_search import sequential_sum, signed_peak

ENCODERS = {
    "Q2_K": kquants.quantize_q2_k,
    "Q3_K": kquants.quantize_q3_k,
    "Q4_K": kquants.quantize_q4_k,
    "Q5_K": kquants.quantize_q5_k,
    "Q6_K": kquants.quantize_q6_k,
}
GGML_TYPES = {name: GGMLQuantizationType[name] for name in ENCODERS}
ROW_KINDS = 20


def edge_case_rows(rows: int, cols: int, seed: int) -> np.ndarray:
    """float32 [rows, cols]; row r is of kind r % ROW_KINDS (see the list below)."""
    rng = np.random.default_rng(seed)
    sub_block = np.arange(cols) // 32

    def row(kind: int) -> np.ndarray:
        g = rng.standard_normal(cols)
        return [
            lambda: g * 0.02,                                           # typical weights
            lambda: _with_outliers(rng.laplace(size=cols) * 0.01, rng),  # heavy tails
            lambda: np.zeros(cols),
            lambda: np.full(cols, 0.5),                                 # constant > 0
            lambda: np.full(cols, -0.25),                               # constant < 0
            lambda: g * 1e-9,                 # fp16 super-scale underflows to 0
            lambda: g * 1e-6,                 # fp16 super-scale subnormal
            lambda: rng.uniform(-3e4, 3e4, cols),                       # huge
            lambda: g * np.where(sub_block % 2 == 0, 1e-4, 1.0),        # 6-bit scale 0
            lambda: rng.uniform(0.1, 1.0, cols),                        # min clamps to 0
            lambda: -rng.uniform(0.1, 1.0, cols),
            lambda: g * (rng.random(cols) < 0.05),                      # sparse
            lambda: np.round(g * 4) / 4,                                # rounding ties
            lambda: np.where(np.arange(cols) % 256 == 0, 1.5, 0.0),     # one value a block
            lambda: np.linspace(-1, 1, cols),
            lambda: g * 1e-20,                # below llama.cpp's GROUP_MAX_EPS
            lambda: g * 1e-40,                # float32 subnormals: 15/range overflows
            lambda: g * 1e3,
            lambda: g * 10.0 ** rng.integers(-12, 3, size=cols // 16).repeat(16),
            lambda: np.round(g * 16) / 16 * 0.01,
        ][kind]()

    return np.stack([row(r % ROW_KINDS) for r in range(rows)]).astype(np.float32)


def _with_outliers(values: np.ndarray, rng) -> np.ndarray:
    values[rng.integers(len(values), size=3)] *= 50
    return values


def _dequantize(blocks: np.ndarray, type_name: str, shape) -> np.ndarray:
    return dequantize(blocks, GGML_TYPES[type_name]).reshape(shape)


# ---------------------------------------------------------------- llama.cpp is the judge

SHAPE = LlamaShape(n_layers=2, hidden=256, ffn=512, n_heads=4, n_kv_heads=2, vocab=512)
FTYPE_Q2_K, FTYPE_Q3_K_S = 10, 11  # llama_ftype (llama.h)
EXPECTED_TYPES = {
    FTYPE_Q2_K: {"Q2_K", "Q3_K", "Q6_K"},  # attn_v, attn_output and ffn_down take Q3_K
    FTYPE_Q3_K_S: {"Q3_K", "Q6_K"},
    FTYPE_Q4_K_M: {"Q4_K", "Q6_K"},
    FTYPE_Q5_K_M: {"Q5_K", "Q6_K"},
    FTYPE_Q6_K: {"Q6_K"},
}


@pytest.fixture(scope="module")
def source_models(tmp_path_factory):
    """{source ftype: (gguf path, {tensor name: float32 weights as llama.cpp reads them})}."""
    folder = tmp_path_factory.mktemp("kquant-sources")
    models = {}
    for ftype in (FTYPE_ALL_F32, FTYPE_MOSTLY_F16):
        matrices = {}
        for seed, (name, shape) in enumerate(SHAPE.matrix_shapes().items()):
            weights = edge_case_rows(*shape, seed=seed + 100 * ftype)
            if ftype == FTYPE_MOSTLY_F16:
                weights = weights.astype(np.float16).astype(np.float32)
            matrices[name] = weights
        path = folder / f"probe-{ftype}.gguf"
        write_llama_gguf(path, SHAPE, matrices, ftype=ftype)
        models[ftype] = (path, matrices)
    return models


@pytest.mark.parametrize("source_ftype", [FTYPE_ALL_F32, FTYPE_MOSTLY_F16], ids=["f32", "f16"])
@pytest.mark.parametrize("target_ftype", list(EXPECTED_TYPES),
                         ids=["q2_k", "q3_k_s", "q4_k_m", "q5_k_m", "q6_k"])
def test_blocks_are_byte_identical_to_llama_cpp(source_models, tmp_path, source_ftype,
                                                target_ftype):
    pytest.importorskip("llama_cpp")
    source, matrices = source_models[source_ftype]
    target = tmp_path / "llama-cpp.gguf"
    llama_cpp_quantize(source, target, target_ftype, nthread=1)

    seen_types = set()
    for name, (type_name, theirs) in read_tensor_blocks(target).items():
        if type_name not in ENCODERS:
            continue
        seen_types.add(type_name)
        weights = matrices[name]
        ours = ENCODERS[type_name](weights)
        assert ours.shape == theirs.shape, name
        block_bytes = kquants.BLOCK_BYTES[type_name]
        differing = (ours.reshape(-1, block_bytes) != theirs.reshape(-1, block_bytes)).any(1)
        if differing.any():
            gap = np.abs(_dequantize(ours, type_name, weights.shape)
                         - _dequantize(theirs, type_name, weights.shape)).max()
            first_row = int(np.argmax(differing)) * 256 // weights.shape[1]
            pytest.fail(f"{name} ({type_name}): {differing.sum()} of {differing.size} blocks "
                        f"differ from llama.cpp's (first in row {first_row}, kind "
                        f"{first_row % ROW_KINDS}); max dequantized gap {gap:.3g}")
    assert seen_types == EXPECTED_TYPES[target_ftype]


# ---------------------------------------------------------------- round trip (gguf-py decodes)

# Bounds on the RMS error relative to the RMS of Gaussian weights (typical ~0.30, 0.15, 0.09,
# 0.045, 0.018); the per-value bound: never worse than one quantization step of the
# sub-block.
RELATIVE_RMS_BOUND = {"Q2_K": 0.33, "Q3_K": 0.17, "Q4_K": 0.12, "Q5_K": 0.06, "Q6_K": 0.025}
SUB_BLOCK = {"Q2_K": 16, "Q3_K": 16, "Q4_K": 32, "Q5_K": 32, "Q6_K": 16}
LEVELS = {"Q2_K": 3, "Q3_K": 7, "Q4_K": 15, "Q5_K": 31, "Q6_K": 63}
# the largest error on a row of the edge kinds, relative to its peak (Q2_K: four levels)
EDGE_ERROR_BOUND = {"Q2_K": 0.4, "Q3_K": 0.25}


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_round_trip_error_on_gaussian_weights(type_name):
    weights = (np.random.default_rng(1).standard_normal((64, 1024)) * 0.02).astype(np.float32)
    blocks = ENCODERS[type_name](weights)
    assert blocks.dtype == np.uint8
    assert blocks.shape == (64, 1024 // 256 * kquants.BLOCK_BYTES[type_name])
    restored = _dequantize(blocks, type_name, weights.shape)
    error = restored - weights
    relative_rms = np.sqrt(np.mean(error ** 2) / np.mean(weights ** 2))
    assert relative_rms < RELATIVE_RMS_BOUND[type_name]
    # one step of a sub-block is at most its range / (levels - 1); bound per sub-block
    width, levels = SUB_BLOCK[type_name], LEVELS[type_name]
    spans = np.ptp(weights.reshape(-1, width), axis=1, keepdims=True)
    assert (np.abs(error.reshape(-1, width)) <= spans / levels * 1.5 + 1e-6).all()


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_edge_rows_round_trip_within_bounds(type_name):
    weights = edge_case_rows(2 * ROW_KINDS, 512, seed=7)
    restored = _dequantize(ENCODERS[type_name](weights), type_name, weights.shape)
    assert np.isfinite(restored).all()
    for row, (w, r) in enumerate(zip(weights, restored)):
        kind = row % ROW_KINDS
        peak = np.abs(w).max()
        if kind == 2:      # all zero: exactly zero back
            assert (r == 0).all()
        elif kind in (5, 6, 15, 16):
            # the fp16 super-scales underflow (to 0 or a coarse subnormal); the format
            # cannot do better, llama.cpp writes the same bytes. Nothing large comes back.
            assert np.abs(r - w).max() <= 3 * peak + 1e-7
        elif kind in (3, 4):        # constants: a 6-bit min/scale times fp16 is ~1% exact
            assert np.allclose(r, w, rtol=0.02), (kind, r[:4])
        else:
            bound = EDGE_ERROR_BOUND.get(type_name, 0.2)
            assert np.abs(r - w).max() <= bound * peak, (kind, np.abs(r - w).max(), peak)


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_all_zero_rows_give_all_zero_blocks(type_name):
    blocks = ENCODERS[type_name](np.zeros((3, 512), dtype=np.float32))
    assert not blocks.any()


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_chunking_threads_and_input_dtype_do_not_change_the_bytes(type_name):
    weights = edge_case_rows(ROW_KINDS, 768, seed=3).astype(np.float16)
    encode = ENCODERS[type_name]
    whole = encode(weights.astype(np.float32), threads=1, chunk_blocks=10_000)
    assert np.array_equal(encode(weights, threads=1), whole)
    assert np.array_equal(encode(weights.astype(np.float32), chunk_blocks=7, threads=3), whole)
    assert np.array_equal(encode(weights.astype(np.float32), chunk_blocks=1, threads=1), whole)


def test_progress_reports_each_chunk_and_can_cancel():
    weights = np.ones((8, 512), dtype=np.float32)
    for threads in (1, 2):
        seen = []
        kquants.quantize_q4_k(weights, progress=seen.append, chunk_blocks=4, threads=threads)
        assert seen == [0.25, 0.5, 0.75, 1.0]

    class Stop(Exception):
        pass

    def stop(fraction):
        raise Stop

    with pytest.raises(Stop):
        kquants.quantize_q6_k(weights, progress=stop, chunk_blocks=4)
    with pytest.raises(Stop):
        kquants.quantize_q6_k(weights, progress=stop, chunk_blocks=1, threads=2)


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_refuses_rows_not_divisible_by_256(type_name):
    with pytest.raises(ValueError, match=f"{type_name} needs a row length divisible by 256; "
                                         "got 896"):
        ENCODERS[type_name](np.zeros((4, 896), dtype=np.float32))


def test_refuses_non_matrix_and_integer_input():
    with pytest.raises(ValueError, match="2-D"):
        kquants.quantize_q4_k(np.zeros(512, dtype=np.float32))
    with pytest.raises(ValueError, match="floating-point"):
        kquants.quantize_q4_k(np.zeros((2, 256), dtype=np.int32))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_weights_naming_the_row(bad, dtype):
    weights = np.zeros((6, 512), dtype=dtype)
    weights[4, 300] = bad
    with pytest.raises(ValueError, match="row 4 holds a NaN or infinite value"):
        kquants.quantize_q5_k(weights, chunk_blocks=3)
    assert np.isnan(weights[4, 300]) or np.isinf(weights[4, 300])  # the input is untouched


def test_float16_chunks_convert_exactly_like_numpys_cast():
    from engine.export.fp16 import float16_to_float32

    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].reshape(-1, 8)  # zeros of both signs, subnormals
    assert finite.size == 63488
    ours = float16_to_float32(finite)
    assert ours.shape == finite.shape and ours.dtype == np.float32
    assert np.array_equal(ours.view(np.uint32), finite.astype(np.float32).view(np.uint32))
    assert float16_to_float32(np.float16([1.0, np.inf])) is None
    assert float16_to_float32(np.float16([np.nan, 2.0])) is None


def test_q3_k_bytes_do_not_depend_on_its_first_round_slices(monkeypatch):
    # one refinement per chunk gathers the sub-blocks of every slice; here 60 blocks in
    # slices of 2 give 30 slices, against llama.cpp's own encoder
    pytest.importorskip("llama_cpp")
    from engine.export.kquants_llamacpp import llama_cpp_quantize_rows

    weights = edge_case_rows(ROW_KINDS, 768, seed=11)
    theirs = llama_cpp_quantize_rows(weights, "Q3_K")
    assert np.array_equal(kquants.quantize_q3_k(weights, threads=1), theirs)
    monkeypatch.setattr(kquants, "Q3_SLICE_BLOCKS", 2)
    assert np.array_equal(kquants.quantize_q3_k(weights, threads=1), theirs)
    assert np.array_equal(kquants.quantize_q3_k(weights, threads=2, chunk_blocks=7), theirs)


@pytest.mark.parametrize("type_name", list(ENCODERS))
def test_refuses_values_whose_fp16_scale_overflows(type_name):
    # llama.cpp itself writes inf scales here and then fails its own validation
    weights = np.zeros((3, 256), dtype=np.float32)
    weights[2, :] = np.linspace(-1e9, 1e9, 256)
    with pytest.raises(ValueError, match="row 2 has values up to 1e\\+09, too large"):
        ENCODERS[type_name](weights)


def test_sequential_sum_adds_in_row_order_like_the_c_loops():
    # byte identity depends on numpy reducing axis 0 row after row (no pairwise summation)
    rng = np.random.default_rng(0)
    columns = (rng.standard_normal((32, 5000)) * np.exp(rng.standard_normal((32, 5000)) * 4)
               ).astype(np.float32)
    expected = columns[0].copy()
    for row in columns[1:]:
        expected = expected + row
    assert np.array_equal(sequential_sum(columns), expected)


# ---------------------------------------------------------------- arbitrary rows vs llama.cpp

def _rows_strategy():
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    finite = st.floats(min_value=-1e5, max_value=1e5, width=32, allow_nan=False,
                       allow_infinity=False)
    # small integers times a power of two: exact rounding ties and repeated values
    on_grid = st.builds(lambda k, e: float(np.float32(k * 2.0 ** e)),
                        st.integers(-40, 40), st.integers(-30, 4))
    elements = st.one_of(finite, on_grid, st.sampled_from([0.0, -0.0, 1.0, -1.0]))
    return st.integers(1, 3).flatmap(
        lambda rows: arrays(np.float32, (rows, 256), elements=elements))


PROBE_SHAPE = LlamaShape(n_layers=1, hidden=256, ffn=256, n_heads=2, n_kv_heads=2, vocab=260)


def test_arbitrary_rows_are_byte_identical_to_llama_cpp(tmp_path):
    """Hypothesis picks the rows (any finite float32 up to 1e5, ties, zeros, subnormals)."""
    pytest.importorskip("llama_cpp")
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure stays quick
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(rows=_rows_strategy())
    def check(rows):
        vocab, hidden = PROBE_SHAPE.vocab, PROBE_SHAPE.hidden
        tiled = np.resize(rows, (vocab, hidden)).astype(np.float32)
        matrices = {name: np.zeros(shape, dtype=np.float32)
                    for name, shape in PROBE_SHAPE.matrix_shapes().items()}
        matrices["token_embd.weight"] = tiled
        matrices["output.weight"] = tiled
        source = tmp_path / "probe.gguf"
        write_llama_gguf(source, PROBE_SHAPE, matrices)
        for ftype, embd_type in ((FTYPE_Q4_K_M, "Q4_K"), (FTYPE_Q5_K_M, "Q5_K")):
            target = tmp_path / f"probe-{ftype}.gguf"
            llama_cpp_quantize(source, target, ftype)
            tensors = read_tensor_blocks(target)
            for name, type_name in (("token_embd.weight", embd_type),
                                    ("output.weight", "Q6_K")):
                found_type, theirs = tensors[name]
                assert found_type == type_name
                ours = ENCODERS[type_name](rows)
                assert np.array_equal(ours, theirs[:len(rows)]), (type_name, rows)

    check()


def test_quantize_k_dispatches_by_type_name():
    weights = edge_case_rows(4, 256, seed=5)
    for type_name, encoder in ENCODERS.items():
        assert np.array_equal(kquants.quantize_k(weights, type_name, threads=1),
                              encoder(weights))
    with pytest.raises(ValueError, match="no K-quant encoder for 'IQ2_XS'"):
        kquants.quantize_k(weights, "IQ2_XS")


def test_signed_peak_keeps_the_first_of_equal_magnitudes_like_the_c_loop():
    columns = np.array([[0.0, -2.0, 2.0, 1.0],
                        [0.0, 2.0, -2.0, -3.0],
                        [0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    peak, amax = signed_peak(columns)
    assert peak.tolist() == [0.0, -2.0, 2.0, -3.0]
    assert amax.tolist() == [0.0, 2.0, 2.0, 3.0]


@pytest.mark.parametrize("type_name", ["Q4_K", "Q5_K", "Q6_K"])
def test_search_slices_do_not_change_the_bytes(type_name, monkeypatch):
    # the searches run per SEARCH_SLICE_BLOCKS super-blocks; 60 blocks in slices of 7
    # (the last one short), against llama.cpp's own encoder
    pytest.importorskip("llama_cpp")
    from engine.export.kquants_llamacpp import llama_cpp_quantize_rows

    weights = edge_case_rows(ROW_KINDS, 768, seed=12)
    theirs = llama_cpp_quantize_rows(weights, type_name)
    monkeypatch.setattr(kquants, "SEARCH_SLICE_BLOCKS", 7)
    assert np.array_equal(kquants.quantize_k(weights, type_name, threads=1), theirs)
    assert np.array_equal(kquants.quantize_k(weights, type_name, threads=2, chunk_blocks=20),
                          theirs)
