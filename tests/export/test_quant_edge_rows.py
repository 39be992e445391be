"""Hypothesis picks the rows, llama.cpp judges: the new encoders (Q4_0, Q4_1, Q5_1, Q2_K,
Q3_K, IQ4_NL, IQ4_XS) on rows built from the cases where quantizers go wrong: all zeros
(both signs), one huge value among small ones, float32 and float16 subnormals, exact ties;
and NaN/inf anywhere refused with a message naming the row."""
from __future__ import annotations

import numpy as np
import pytest

from engine.export import block_quants, iq4_quants, kquants
from engine.export.kquants_llamacpp import (
    LlamaShape,
    llama_cpp_quantize,
    read_tensor_blocks,
    write_llama_gguf,
)

SHAPE = LlamaShape(n_layers=1, hidden=256, ffn=256, n_heads=4, n_kv_heads=2, vocab=320)
# llama_ftype -> the type token_embd.weight takes in that file (it has an output tensor)
FILE_TYPES = {2: "Q4_0", 3: "Q4_1", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K", 25: "IQ4_NL",
              30: "IQ4_XS"}
ENCODERS = {"Q4_0": block_quants.quantize_q4_0, "Q4_1": block_quants.quantize_q4_1,
            "Q5_1": block_quants.quantize_q5_1, "Q2_K": kquants.quantize_q2_k,
            "Q3_K": kquants.quantize_q3_k, "IQ4_NL": iq4_quants.quantize_iq4_nl,
            "IQ4_XS": iq4_quants.quantize_iq4_xs}


def _rows_strategy():
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    small = st.floats(min_value=-1.0, max_value=1.0, width=32)
    tiny = float(np.float32(1.1e-38))  # float32 subnormals lie below 1.18e-38
    subnormal = st.floats(min_value=-tiny, max_value=tiny, width=32)
    f16_subnormal = st.integers(-1023, 1023).map(lambda k: float(np.float32(k * 2.0 ** -24)))
    ties = st.integers(-64, 64).map(lambda k: k / 8)
    elements = st.one_of(small, subnormal, f16_subnormal, ties, st.sampled_from([0.0, -0.0]))
    row = st.one_of(
        arrays(np.float32, SHAPE.hidden, elements=elements),
        arrays(np.float32, SHAPE.hidden, elements=st.sampled_from([0.0, -0.0])),  # zeros
        arrays(np.float32, SHAPE.hidden, elements=subnormal))
    with_peak = st.tuples(row, st.integers(0, SHAPE.hidden - 1),
                          st.sampled_from([0.0, 6e4, -6e4, 3e3, 1e-30])).map(_with_value)
    return st.lists(with_peak, min_size=1, max_size=4).map(np.stack)


def _with_value(args):
    row, where, value = args
    row = row.copy()
    if value:
        row[where] = value  # one huge (or one tiny) value in the row
    return row


def test_edge_rows_are_byte_identical_to_llama_cpp(tmp_path):
    pytest.importorskip("llama_cpp")
    from hypothesis import HealthCheck, Phase, given, settings

    @settings(max_examples=8, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(rows=_rows_strategy())
    def check(rows):
        matrices = {name: np.zeros(shape, dtype=np.float32)
                    for name, shape in SHAPE.matrix_shapes().items()}
        matrices["token_embd.weight"] = np.resize(rows, (SHAPE.vocab, SHAPE.hidden))
        source = tmp_path / "probe.gguf"
        write_llama_gguf(source, SHAPE, matrices)
        for ftype, type_name in FILE_TYPES.items():
            target = tmp_path / f"probe-{ftype}.gguf"
            llama_cpp_quantize(source, target, ftype)
            found, theirs = read_tensor_blocks(target)["token_embd.weight"]
            assert found == type_name
            ours = ENCODERS[type_name](rows)
            assert np.array_equal(ours, theirs[:len(rows)]), (type_name, rows)

    check()


def test_non_finite_values_are_refused_naming_the_row():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=30, deadline=None, derandomize=True, database=None)
    @given(row=st.integers(0, 5), col=st.integers(0, 511),
           bad=st.sampled_from([np.nan, np.inf, -np.inf]),
           dtype=st.sampled_from([np.float32, np.float16]),
           type_name=st.sampled_from(sorted(ENCODERS)))
    def check(row, col, bad, dtype, type_name):
        w = (np.random.default_rng(row).standard_normal((6, 512)) * 0.02).astype(dtype)
        w[row, col] = bad
        with pytest.raises(ValueError, match=f"{type_name}: row {row} holds a NaN"):
            ENCODERS[type_name](w)

    check()
