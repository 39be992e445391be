"""Exports with an importance matrix against llama.cpp's quantizer given the same matrix.

Same F16 source and the same matrix for both: Tailor's GGUF must hold, tensor by tensor,
the type and bytes `llama_model_quantize` writes when its params carry the matrix
(`llama_model_quantize_params.imatrix`, an array of `llama_model_imatrix_data`, as
llama-quantize --imatrix passes it: kquants_llamacpp.llama_cpp_quantize). That checks the weighted encoders (imatrix_quants),
the rules on which tensors use the matrix (imatrix_plan) and the mixture rules that differ
with one. The block encoders are also checked alone against `ggml_quantize_chunk` with
quant_weights on edge rows (hypothesis).
"""
from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from engine.export.imatrix_quants import WEIGHTED_TYPES, quantize_weighted
from engine.export.kquants_llamacpp import llama_cpp_quantize, llama_cpp_quantize_rows
from engine.export.quant_types import QUANT_BY_NAME
from engine.tiny_models import cached_tiny_model

from .helpers import assert_same_tensors, f16_copy, quiet_fd2

pytest.importorskip("llama_cpp")

WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8}


def _gguf_tensors(path: Path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def seeded_imatrix(f16: Path, seed: int, *, zeros: bool = False) -> dict[str, np.ndarray]:
    """A positive matrix for every weight matrix of the F16 file (token_embd left out, as
    llama-imatrix leaves it out); ``zeros``: some columns 0, some tensors missing, one
    expert's row all 0, and a token_embd entry of the wrong size (llama.cpp ignores it)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in _gguf_tensors(f16).items():
        if len(t.shape) < 2 or not name.endswith(".weight") or name == "token_embd.weight":
            continue
        n_mat = int(t.shape[2]) if len(t.shape) == 3 else 1
        values = (rng.gamma(0.5, 2.0, size=(n_mat, int(t.shape[0]))) + 1e-4).astype(np.float32)
        if zeros:
            values[:, rng.random(values.shape[1]) < 0.2] = 0
            values[-1] = 0 if n_mat > 1 else values[-1]
        out[name] = values.reshape(-1) if n_mat > 1 else values[0]
    if zeros:
        for name in sorted(out)[::5]:
            del out[name]
        out["token_embd.weight"] = np.ones(7, np.float32)
    return out


def assert_same_with_imatrix(m16: Path, quant: str, imatrix: dict, tmp_path: Path) -> dict:
    """Export ``m16`` as ``quant`` with ``imatrix`` and compare with llama.cpp given the same
    matrix; returns name -> type."""
    f16 = tmp_path / f"{m16.name}-f16.gguf"
    if not f16.exists():
        export_gguf(m16, f16, "f16", verify=False)
    ours = export_gguf(m16, tmp_path / f"{m16.name}-{quant}-imx.gguf", quant, verify=False,
                       imatrix=imatrix)
    reference = tmp_path / f"{m16.name}-{quant}-imx-llama.gguf"
    with quiet_fd2():
        llama_cpp_quantize(f16, reference, QUANT_BY_NAME[quant].ftype, nthread=2,
                           imatrix=imatrix)
    return assert_same_tensors(ours.path, reference, f"{quant} with a matrix")


def _f16_model(kind: str, folder: Path, **shape) -> Path:
    return f16_copy(cached_tiny_model(kind, **shape), folder)


EVERY_TYPE = ["q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m",
              "q6_k", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl", "iq4_xs", "q8_0"]


def test_every_type_with_an_imatrix_is_byte_identical_to_llama_cpp(tmp_path):
    """256 wide, 8 layers: every K-quant and its layer rules apply; the IQ4 ffn_down rule
    is off with a matrix and Q4_0/Q5_0's ffn_down guard (Q4_1/Q5_1 on layer 0) on."""
    m16 = _f16_model("llama3", tmp_path / "llama3-m16", **WIDE)
    export_gguf(m16, tmp_path / "llama3-m16-f16.gguf", "f16", verify=False)
    imatrix = seeded_imatrix(tmp_path / "llama3-m16-f16.gguf", seed=1)
    types = {q: assert_same_with_imatrix(m16, q, imatrix, tmp_path) for q in EVERY_TYPE}
    assert types["iq4_xs"]["blk.0.ffn_down.weight"] == "IQ4_XS"  # Q5_K without a matrix
    assert types["q4_0"]["blk.0.ffn_down.weight"] == "Q4_1"
    assert types["q5_0"]["blk.0.ffn_down.weight"] == "Q5_1"
    assert types["q4_0"]["blk.1.ffn_down.weight"] == "Q4_0"
    plain = export_gguf(m16, tmp_path / "plain-q4_k_m.gguf", "q4_k_m", verify=False)
    weighted = _gguf_tensors(tmp_path / "llama3-m16-q4_k_m-imx.gguf")
    same = [n for n, t in _gguf_tensors(plain.path).items() if n.startswith("blk.")
            and len(t.shape) == 2 and np.array_equal(t.data, weighted[n].data)]
    assert not same, f"the matrix changed nothing in {same}"


@pytest.mark.parametrize("kind,shape,quants", [
    ("qwen2", {}, ["q2_k", "q4_k_m", "q5_k_s", "q4_0", "iq4_xs"]),  # 64 wide: fallbacks
    ("gemma3", WIDE, ["q3_k_m", "q5_1"]),  # 4 query heads per KV head: attn_v rules
], ids=["qwen2-64", "gemma3"])
def test_fallbacks_zeros_and_missing_entries_match_llama_cpp(kind, shape, quants, tmp_path):
    """Zero columns, tensors without an entry (quantized without), a token_embd entry of the
    wrong size (ignored, as llama.cpp ignores it)."""
    m16 = _f16_model(kind, tmp_path / f"{kind}-m16", **shape)
    export_gguf(m16, tmp_path / f"{kind}-m16-f16.gguf", "f16", verify=False)
    imatrix = seeded_imatrix(tmp_path / f"{kind}-m16-f16.gguf", seed=2, zeros=True)
    for quant in quants:
        assert_same_with_imatrix(m16, quant, imatrix, tmp_path)


def test_stacked_experts_use_each_experts_row(tmp_path):
    """Qwen3-MoE: ffn_*_exps take one matrix row per expert (the last one all zeros)."""
    m16 = _f16_model("qwen3_moe", tmp_path / "moe-m16", hidden_size=256, intermediate_size=512)
    export_gguf(m16, tmp_path / "moe-m16-f16.gguf", "f16", verify=False)
    imatrix = seeded_imatrix(tmp_path / "moe-m16-f16.gguf", seed=3, zeros=True)
    imatrix.setdefault("blk.0.ffn_down_exps.weight",
                       seeded_imatrix(tmp_path / "moe-m16-f16.gguf", 4)["blk.0.ffn_down_exps.weight"])
    for quant in ("q4_k_m", "q2_k"):
        assert_same_with_imatrix(m16, quant, imatrix, tmp_path)


def test_wrong_sized_or_non_finite_matrix_is_refused_naming_the_tensor(tmp_path):
    m16 = _f16_model("qwen2", tmp_path / "m16")
    export_gguf(m16, tmp_path / "f16.gguf", "f16", verify=False)
    imatrix = seeded_imatrix(tmp_path / "f16.gguf", seed=5)
    name = "blk.0.attn_q.weight"
    with pytest.raises(TailorError, match=f"entry for {name} has 5 values; the tensor has 64"):
        export_gguf(m16, tmp_path / "a.gguf", "q4_k_m", verify=False,
                    imatrix={**imatrix, name: np.ones(5, np.float32)})
    bad = imatrix[name].copy()
    bad[3] = np.nan
    with pytest.raises(TailorError, match=f"entry for {name} holds a NaN"):
        export_gguf(m16, tmp_path / "b.gguf", "q4_k_m", verify=False,
                    imatrix={**imatrix, name: bad})
    assert not (tmp_path / "a.gguf").exists() and not (tmp_path / "b.gguf").exists()


def test_an_empty_matrix_is_no_matrix(tmp_path):
    """llama-quantize passes no matrix when it has no entries: the bytes and the mixture of
    an export without one (the IQ4 ffn_down rule stays on)."""
    m16 = _f16_model("llama3", tmp_path / "m16", **WIDE)
    plain = export_gguf(m16, tmp_path / "plain.gguf", "iq4_xs", verify=False)
    empty = export_gguf(m16, tmp_path / "empty.gguf", "iq4_xs", verify=False, imatrix={})
    assert plain.path.read_bytes() == empty.path.read_bytes()


# ---------------------------------------------------------------- block encoders, edge rows

def _edge_row(kind: str, rng: np.random.Generator, cols: int) -> np.ndarray:
    row = (rng.standard_normal(cols) * 0.05).astype(np.float32)
    if kind == "zeros":
        row[:] = 0
        row[rng.random(cols) < 0.5] = -0.0
    elif kind == "huge":
        row[rng.integers(cols)] = rng.choice([6e4, -6e4])
    elif kind == "denormal":
        row *= np.float32(1e-39)
    elif kind == "f16-denormal":
        row = (row * np.float32(1e-5)).astype(np.float16).astype(np.float32)
    elif kind == "ties":
        row = np.round(row * 40) / 40
    elif kind == "positive-with-zeros":
        row = np.abs(row)
        row[::7] = -0.0
    return row.astype(np.float16).astype(np.float32)


ROW_KINDS = ["normal", "zeros", "huge", "denormal", "f16-denormal", "ties",
             "positive-with-zeros"]
WEIGHT_KINDS = ["random", "zeros", "some-zeros", "tiny", "one-huge"]


def _importance(kind: str, rng: np.random.Generator, cols: int) -> np.ndarray:
    qw = (rng.gamma(0.5, 2.0, cols)).astype(np.float32)
    if kind == "zeros":
        qw[:] = 0
    elif kind == "some-zeros":
        qw[rng.random(cols) < 0.5] = 0
    elif kind == "tiny":
        qw *= np.float32(1e-38)
    elif kind == "one-huge":
        qw[rng.integers(cols)] = 1e20  # (1e30 overflows the sums: llama.cpp writes inf scales)
    return qw


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.sampled_from(ROW_KINDS), min_size=1, max_size=4),
       weights=st.sampled_from(WEIGHT_KINDS), seed=st.integers(0, 2**16),
       wide=st.booleans())
def test_weighted_encoders_match_llama_cpp_on_edge_rows(rows, weights, seed, wide):
    rng = np.random.default_rng(seed)
    cols = 512 if wide else 256
    w = np.stack([_edge_row(kind, rng, cols) for kind in rows])
    qw = _importance(weights, rng, cols)
    for type_name in sorted(WEIGHTED_TYPES):
        ours = quantize_weighted(w.astype(np.float16), type_name, qw)
        assert np.array_equal(ours, llama_cpp_quantize_rows(w, type_name, qw)), (type_name, rows)


def test_weighted_encoders_refuse_nan_and_say_the_row():
    w = np.ones((3, 256), np.float32)
    w[2, 5] = np.nan
    for type_name in ("Q4_K", "Q4_0", "IQ4_XS"):
        with pytest.raises(ValueError, match=f"{type_name}: row 2 holds a NaN"):
            quantize_weighted(w, type_name, np.ones(256, np.float32))
    with pytest.raises(ValueError, match="importance matrix holds a NaN"):
        quantize_weighted(np.ones((1, 256), np.float32), "Q6_K", np.full(256, np.inf))


def test_moe_verification_reference_is_rounded_with_the_matrix(tmp_path):
    """The quantized-MoE check runs MLX on the weights rounded as the file rounds them: with
    a matrix, rounded with it (per expert), so they equal the file dequantized."""
    from gguf import quants

    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.verify import rounded_folder
    from engine.export.write import plan_tensors
    from engine.models.load import read_config

    src = cached_tiny_model("qwen3_moe", hidden_size=256, intermediate_size=512)
    export_gguf(src, tmp_path / "f16.gguf", "f16", verify=False)
    imatrix = seeded_imatrix(tmp_path / "f16.gguf", seed=6)
    planned = plan_tensors(arch_info(read_config(src)), list_tensors(src), "q4_k_m", imatrix)
    rounded_folder(src, planned, tmp_path / "r")
    q = export_gguf(src, tmp_path / "q.gguf", "q4_k_m", verify=False, imatrix=imatrix)
    f = _gguf_tensors(export_gguf(tmp_path / "r", tmp_path / "r.gguf", "f32", verify=False).path)
    weighted = 0
    for t in _gguf_tensors(q.path).values():
        values = quants.dequantize(t.data, t.tensor_type)
        weighted += t.name in imatrix and t.tensor_type.name not in ("F32", "F16")
        assert np.array_equal(values, np.asarray(f[t.name].data).reshape(values.shape)), t.name
    assert weighted > 10


def test_a_far_value_of_tiny_weight_is_levelled_as_llama_cpp_does():
    """With importance weights the fitted min may lie far above a value whose weight is
    tiny: |iscale * (x - min)| passes 2**22, where C's nearest_int bit trick (not a round)
    decides the level the search's error sums see (found on Q5_1 with -6e4 at 1e-12)."""
    rng = np.random.default_rng(166)
    w = (rng.standard_normal((4, 256)) * 0.05).astype(np.float16).astype(np.float32)
    qw = rng.gamma(0.5, 2.0, 256).astype(np.float32)
    for row in range(4):
        col = rng.integers(256)
        w[row, col] = rng.choice([-1, 1]) * rng.choice([50.0, 600.0, 6e4])
        qw[col] = rng.choice([1e-3, 1e-6, 1e-9, 1e-12])
    for type_name in sorted(WEIGHTED_TYPES):
        ours = quantize_weighted(w, type_name, qw)
        assert np.array_equal(ours, llama_cpp_quantize_rows(w, type_name, qw)), type_name


class _MatrixFromFile(dict):
    """What imatrix-collect hands the export: the weights, where they came from, the keys."""

    record = {"path": Path("/data/m.imatrix.gguf"), "chunk_count": 7}

    def gguf_metadata(self):
        return {"quantize.imatrix.file": "/data/m.imatrix.gguf",
                "quantize.imatrix.entries_count": len(self),
                "quantize.imatrix.chunks_count": 7}


def test_with_a_matrix_no_advice_to_use_one_and_the_record_and_file_say_it(tmp_path):
    from engine.events import ListReporter, Log
    from engine.export.quant_types import imatrix_warning

    m16 = _f16_model("qwen2", tmp_path / "m16")
    export_gguf(m16, tmp_path / "f16.gguf", "f16", verify=False)
    imatrix = _MatrixFromFile(seeded_imatrix(tmp_path / "f16.gguf", seed=7))
    events = ListReporter()
    result = export_gguf(m16, tmp_path / "q2.gguf", "q2_k", verify=False, report=events,
                         imatrix=imatrix)
    warnings = [e.message for e in events.of(Log) if e.level == "warning"]
    assert imatrix_warning("q2_k") not in warnings
    record = result.metadata["imatrix"]
    assert record["entries"] == len(imatrix) and record["path"] == "/data/m.imatrix.gguf"
    assert 0 < record["tensors_weighted"] <= len(imatrix)
    fields = gguf.GGUFReader(str(result.path)).fields
    assert bytes(fields["quantize.imatrix.file"].parts[-1]).decode() == "/data/m.imatrix.gguf"
    assert int(fields["quantize.imatrix.entries_count"].parts[-1][0]) == len(imatrix)
    assert fields["quantize.imatrix.chunks_count"].types == [gguf.GGUFValueType.UINT32]
