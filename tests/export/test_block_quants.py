"""Our Q8_0 and Q5_0 encoders against llama.cpp itself.

Most of a Q4_K_M export of a model whose rows are not a multiple of 256 (Qwen2.5-0.5B: 896)
is Q5_0 and Q8_0, the fallbacks of Q4_K and Q6_K. The judge is `llama_model_quantize` on a
small llama GGUF 96 wide (every matrix falls back), with rows covering the K-quant edge cases
plus the 32-value blocks' own: both signs of the largest magnitude in one block, all-zero
blocks led by -0.0, exact .5 rounding ties, values just below .5, scales at the fp16 limit.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf.quants import Q5_0, Q8_0

from engine.export.block_quants import (
    BLOCK_BYTES,
    f16_to_f32,
    quantize_q4_0,
    quantize_q4_1,
    quantize_q5_0,
    quantize_q5_1,
    quantize_q8_0,
)
from engine.export.kquants_llamacpp import (
    FTYPE_ALL_F32,
    FTYPE_MOSTLY_F16,
    FTYPE_Q4_K_M,
    LlamaShape,
    llama_cpp_quantize,
    read_tensor_blocks,
    write_llama_gguf,
)

from .test_kquants import ROW_KINDS, edge_case_rows

ENCODERS = {"Q8_0": quantize_q8_0, "Q5_0": quantize_q5_0, "Q5_1": quantize_q5_1,
            "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1}
# llama_ftype (llama.h)
FTYPE_Q4_0, FTYPE_Q4_1, FTYPE_Q8_0, FTYPE_Q5_0, FTYPE_Q5_1, FTYPE_Q5_K_M = 2, 3, 7, 8, 9, 17
# the 32-value types each file type holds when no row divides into 256 (output: Q6_K -> Q8_0)
EXPECTED_TYPES = {FTYPE_Q8_0: {"Q8_0"}, FTYPE_Q5_0: {"Q5_0", "Q8_0"},
                  FTYPE_Q4_K_M: {"Q5_0", "Q8_0"}, FTYPE_Q5_K_M: {"Q5_1", "Q8_0"},
                  FTYPE_Q4_0: {"Q4_0", "Q8_0"}, FTYPE_Q4_1: {"Q4_1", "Q8_0"},
                  FTYPE_Q5_1: {"Q5_1", "Q8_0"}}
SHAPE = LlamaShape(n_layers=1, hidden=96, ffn=160, n_heads=4, n_kv_heads=2, vocab=320)
BLOCK_KINDS = 8


def block_edge_rows(rows: int, cols: int, seed: int) -> np.ndarray:
    """float32 [rows, cols]: even rows are `edge_case_rows` kinds, odd rows are made of
    32-value blocks of the kinds below, in turn (kind = block index % BLOCK_KINDS)."""
    rng = np.random.default_rng(seed)
    out = edge_case_rows(rows, cols, seed)

    def block(kind: int) -> np.ndarray:
        g = rng.standard_normal(32).astype(np.float32) * 0.02
        b = g.copy()
        if kind == 0:  # largest magnitude with both signs, the negative one first
            b[3], b[20] = -0.5, 0.5
        elif kind == 1:  # ... the positive one first
            b[3], b[20] = 0.5, -0.5
        elif kind == 2:  # all zero, led by -0.0 (llama.cpp: d = -0.0; gguf-py: +0.0)
            b[:] = 0.0
            b[0] = -0.0
            b[7] = -0.0
        elif kind == 3:  # Q8_0: amax 127 gives d = 1, so x * id is an exact .5 tie
            b = rng.integers(-126, 126, 32).astype(np.float32) + np.float32(0.5)
            b[5] = 127.0 if seed % 2 else -127.0
        elif kind == 4:  # Q5_0: max -16 gives d = 1; integer and half-integer values
            b = rng.integers(-32, 32, 32).astype(np.float32) / 2
            b[9] = -16.0
        elif kind == 5:  # x * id just below .5 (x + 0.5 would round it up to 1.0)
            b[:] = np.float32(0.49999997)
            b[0] = 127.0
        elif kind == 6:  # Q5_0's scale near the fp16 limit (d = 65000; llama.cpp refuses inf)
            b = g * 1e6 if seed % 2 else np.clip(g * 3e8, -1.04e6, 1.04e6)
            b[1] = 1.04e6
        else:  # subnormal float32 values, and a one-value block
            b = g * np.float32(1e-30) if seed % 2 else np.eye(32, dtype=np.float32)[kind]
        return b

    per_row = cols // 32
    for r in range(1, rows, 2):
        out[r] = np.concatenate([block((r * per_row + b) % BLOCK_KINDS)
                                 for b in range(per_row)])
    return out


@pytest.fixture(scope="module")
def source_models(tmp_path_factory):
    """{source ftype: (gguf path, {tensor name: float32 weights as llama.cpp reads them})}."""
    folder = tmp_path_factory.mktemp("block-quant-sources")
    models = {}
    for ftype, clipped in ((FTYPE_ALL_F32, False), (FTYPE_ALL_F32, True),
                           (FTYPE_MOSTLY_F16, True)):
        matrices = {}
        for seed, (name, shape) in enumerate(SHAPE.matrix_shapes().items()):
            weights = block_edge_rows(*shape, seed=seed + 100 * ftype)
            if clipped:  # huge rows overflow float16 (and Q4_1/Q5_1's fp16 min): keep them in
                weights = np.clip(weights, -65504, 65504)
            matrices[name] = weights.astype(np.float16 if ftype else np.float32
                                            ).astype(np.float32)
        path = folder / f"probe-{ftype}-{clipped}.gguf"
        write_llama_gguf(path, SHAPE, matrices, ftype=ftype)
        models[ftype, clipped] = (path, matrices)
    return models


@pytest.mark.parametrize("source_ftype", [FTYPE_ALL_F32, FTYPE_MOSTLY_F16], ids=["f32", "f16"])
@pytest.mark.parametrize("target_ftype", list(EXPECTED_TYPES),
                         ids=["q8_0", "q5_0", "q4_k_m-fallbacks", "q5_k_m-fallbacks", "q4_0",
                              "q4_1", "q5_1"])
def test_blocks_are_byte_identical_to_llama_cpp(source_models, tmp_path, source_ftype,
                                                target_ftype):
    pytest.importorskip("llama_cpp")
    # 1e6 overflows Q4_1/Q5_1's fp16 min and Q4_0's scale (max / 8): llama.cpp writes inf,
    # then refuses its own file
    overflows = bool(EXPECTED_TYPES[target_ftype] & {"Q4_0", "Q4_1", "Q5_1"})
    source, matrices = source_models[source_ftype, source_ftype == FTYPE_MOSTLY_F16 or overflows]
    target = tmp_path / "llama-cpp.gguf"
    llama_cpp_quantize(source, target, target_ftype)
    seen = set()
    for name, (type_name, theirs) in read_tensor_blocks(target).items():
        if type_name not in ENCODERS:
            continue
        seen.add(type_name)
        weights = matrices[name]
        inputs = [weights]
        if source_ftype == FTYPE_MOSTLY_F16:
            inputs.append(weights.astype(np.float16))  # the export hands float16 over as is
        for w in inputs:
            ours = ENCODERS[type_name](w)
            assert ours.shape == theirs.shape, name
            size = BLOCK_BYTES[type_name]
            differing = (ours.reshape(-1, size) != theirs.reshape(-1, size)).any(1)
            if differing.any():
                b = int(np.argmax(differing))
                row = b * 32 // weights.shape[1]
                kind = f"block kind {b % BLOCK_KINDS}" if row % 2 else f"row kind " \
                    f"{row % ROW_KINDS}"
                pytest.fail(f"{name} ({type_name}, {w.dtype} in): {differing.sum()} of "
                            f"{differing.size} blocks differ from llama.cpp's; first: row {row} "
                            f"({kind}), values {weights.reshape(-1, 32)[b]}")
    assert seen == EXPECTED_TYPES[target_ftype]


def test_gguf_py_differs_from_llama_cpp_only_on_blocks_led_by_negative_zero():
    """Why we no longer use gguf-py's Q5_0: for an all-zero block its scale takes the first
    value's sign (-0.0 -> d = +0.0), where llama.cpp's loop keeps max = +0.0 (d = -0.0)."""
    w = block_edge_rows(64, 256, seed=7)
    for type_name, ref in (("Q8_0", Q8_0), ("Q5_0", Q5_0)):
        ours = ENCODERS[type_name](w).reshape(-1, BLOCK_BYTES[type_name])
        with np.errstate(all="ignore"):  # gguf-py warns on the float32-subnormal rows
            theirs = ref.quantize_rows(w).reshape(ours.shape)
        blocks = w.reshape(-1, 32)
        led_by_minus_zero = ~blocks.any(1) & np.signbit(blocks[:, 0])
        differ = (ours != theirs).any(1)
        assert led_by_minus_zero.any()
        assert not (differ & ~led_by_minus_zero).any()
        if type_name == "Q5_0":
            assert (ours[led_by_minus_zero, :2] == [0x00, 0x80]).all()  # fp16 -0.0


def test_float16_input_gives_the_float32_bytes_and_converts_exactly():
    rng = np.random.default_rng(1)
    # every float16 bit pattern except inf/NaN: normals, subnormals, both zeros
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    h = h[np.isfinite(h)]
    assert np.array_equal(f16_to_f32(h, np.empty(h.shape, np.float32)).view(np.uint32),
                          h.astype(np.float32).view(np.uint32))
    w = np.resize(rng.permutation(h), (96, 128))
    for encode in ENCODERS.values():
        assert np.array_equal(encode(w), encode(w.astype(np.float32)))


@pytest.mark.parametrize("type_name", list(ENCODERS))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_finite_weights_are_refused_naming_the_row(type_name, bad, dtype):
    w = np.zeros((5, 64), dtype=dtype)
    w[3, 40] = bad
    with pytest.raises(ValueError, match=f"{type_name}: row 3 holds a NaN, an infinite"):
        ENCODERS[type_name](w)


@pytest.mark.parametrize("type_name,peak", [("Q8_0", 8.4e6), ("Q5_0", 1.05e6), ("Q4_0", 5.3e5),
                                            ("Q4_1", 6.6e4), ("Q5_1", 6.6e4)])
def test_scales_past_fp16_are_refused(type_name, peak):
    # llama.cpp writes an inf scale here, then refuses to load its own file
    w = np.zeros((2, 32), dtype=np.float32)
    w[1, 0] = peak
    with pytest.raises(ValueError, match="row 1 .* too large for the format's fp16 scales"):
        ENCODERS[type_name](w)
    w[1, 0] = peak / 1.02
    assert np.isfinite(np.frombuffer(ENCODERS[type_name](w)[1, :2].tobytes(), "<f2")).all()


def test_bad_shapes_are_refused():
    for encode in ENCODERS.values():
        with pytest.raises(ValueError, match="columns a multiple of 32"):
            encode(np.zeros((2, 48), np.float32))
        with pytest.raises(ValueError, match="2-D"):
            encode(np.zeros(64, np.float32))


def _rows_strategy():
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    finite = st.floats(min_value=-1e5, max_value=1e5, width=32, allow_nan=False,
                       allow_infinity=False)
    # small integers times a power of two: exact ties, repeated and opposite magnitudes
    on_grid = st.builds(lambda k, e: float(np.float32(k * 2.0 ** e)),
                        st.integers(-40, 40), st.integers(-30, 4))
    elements = st.one_of(finite, on_grid, st.sampled_from([0.0, -0.0, 1.0, -1.0]))
    return st.integers(1, 4).flatmap(
        lambda rows: arrays(np.float32, (rows, SHAPE.hidden), elements=elements))


def test_arbitrary_rows_are_byte_identical_to_llama_cpp(tmp_path):
    """Hypothesis picks the rows (any finite float32 up to 1e5, ties, zeros, -0.0)."""
    pytest.importorskip("llama_cpp")
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=25, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(rows=_rows_strategy())
    def check(rows):
        tiled = np.resize(rows, (SHAPE.vocab, SHAPE.hidden)).astype(np.float32)
        matrices = {name: np.zeros(shape, dtype=np.float32)
                    for name, shape in SHAPE.matrix_shapes().items()}
        matrices["token_embd.weight"] = tiled  # Q5_0 in a Q5_0 file
        matrices["output.weight"] = tiled  # Q6_K -> Q8_0
        source = tmp_path / "probe.gguf"
        write_llama_gguf(source, SHAPE, matrices)
        target = tmp_path / "probe-q5_0.gguf"
        llama_cpp_quantize(source, target, FTYPE_Q5_0)
        tensors = read_tensor_blocks(target)
        for name, type_name in (("token_embd.weight", "Q5_0"), ("output.weight", "Q8_0")):
            found_type, theirs = tensors[name]
            assert found_type == type_name
            assert np.array_equal(ENCODERS[type_name](rows), theirs[:len(rows)]), (type_name,
                                                                                   rows)

    check()


def test_bytes_do_not_depend_on_how_the_blocks_are_cut(monkeypatch):
    from engine.export import block_quants

    w = np.clip(block_edge_rows(40, 96, seed=11), -65504, 65504)  # Q4_1/Q5_1: fp16 min
    whole = {name: encode(w) for name, encode in ENCODERS.items()}
    monkeypatch.setattr(block_quants, "PIECE_BLOCKS", 7)  # pieces end mid-row
    for name, encode in ENCODERS.items():
        assert np.array_equal(encode(w), whole[name])
        h = np.clip(w, -65504, 65504).astype(np.float16)
        assert np.array_equal(encode(h), encode(h.astype(np.float32)))



def test_q4_1_float16_blocks_of_tiny_spans_give_the_float32_bytes():
    # Q4_1 skips MIN(15) for float16 input (its levels stay <= 15): blocks of neighbouring
    # float16 values (spans of 1..31 ulps) from every 64th bit pattern, subnormals, both signs
    start = np.arange(0, 0x7BC0, 0x40, dtype=np.uint16)
    start = np.concatenate([start, start | np.uint16(0x8000)])
    span = np.random.default_rng(3).integers(1, 32, (len(start), 1))
    bits = start[:, None] + np.minimum(np.arange(32), span).astype(np.uint16)
    w = bits.view(np.float16).reshape(-1, 64)
    assert np.isfinite(w).all()
    assert np.array_equal(quantize_q4_1(w), quantize_q4_1(w.astype(np.float32)))
