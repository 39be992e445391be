"""The type table (engine/export/quant_types.py) is what the CLI offers and explains, every
type in it exports, and 2-/3-bit types without an importance matrix warn with the reason."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T

from engine.events import ListReporter, Log, TailorError
from engine.export.gguf_export import export_gguf
from engine.export.mixtures import DEFAULT_TYPE, FILE_TYPE, QUANTS, encode, nbytes_of
from engine.export.quant_types import QUANT_TYPES, imatrix_warning

REPO = Path(__file__).resolve().parents[2]


def test_cli_help_lists_every_type_with_its_bits_and_use():
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "--help"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for q in QUANT_TYPES:
        line = next((l for l in lines if l.split()[:1] == [q.name]), None)
        assert line is not None, f"{q.name} missing from the help"
        assert f"{q.bits_per_weight:.2f}" in line and q.use in line
    assert set(QUANTS) == {q.name for q in QUANT_TYPES}
    for name in ("q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_1", "q5_0", "q5_1", "q4_k_s",
                 "q5_k_s", "iq4_nl", "iq4_xs"):
        assert name in QUANTS


@pytest.mark.parametrize("quant", QUANTS)
def test_every_type_has_a_file_type_and_an_encoder_of_the_right_size(quant):
    w = (np.random.default_rng(0).standard_normal((8, 256)) * 0.02).astype(np.float16)
    t = DEFAULT_TYPE[quant]
    assert FILE_TYPE[quant].value == next(q.ftype for q in QUANT_TYPES if q.name == quant)
    data = encode(w, t, threads=1)
    assert data.nbytes == nbytes_of(w.shape, t)
    if t not in (T.F32, T.F16, T.BF16):
        assert data.dtype == np.uint8


def test_unknown_type_is_refused_with_the_list_and_a_hint(tiny_model, tmp_path):
    with pytest.raises(TailorError, match="unknown --quant 'q1_k'; choose one of .*q2_k") as e:
        export_gguf(tiny_model("qwen2"), tmp_path / "x.gguf", "q1_k", verify=False)
    assert "--help" in e.value.hint


@pytest.mark.parametrize("quant,warns", [("q3_k_m", True), ("q2_k", True), ("q4_k_m", False)])
def test_2_and_3_bit_types_without_an_imatrix_warn_with_the_reason(quant, warns, tiny_model,
                                                                    tmp_path):
    events = ListReporter()
    export_gguf(tiny_model("qwen2"), tmp_path / f"{quant}.gguf", quant, verify=False,
                report=events)
    warnings = [e.message for e in events.of(Log) if e.level == "warning"]
    if warns:
        assert warnings == [imatrix_warning(quant)]
        assert f"{quant.upper()} without an importance matrix" in warnings[0]
        assert "quality drops" in warnings[0]
    else:
        assert not warnings


def test_cli_prints_the_warning(tiny_model, tmp_path):
    out = tmp_path / "q3.gguf"
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "--model",
                           str(tiny_model("qwen2")), "--quant", "q3_k_s", "--out", str(out),
                           "--no-verify"], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Q3_K_S without an importance matrix" in proc.stdout + proc.stderr


def test_every_type_has_a_verification_tolerance():
    from engine.export.verify import TOLERANCES

    assert set(QUANTS) <= set(TOLERANCES)  # an export of a type without one crashed


@pytest.mark.parametrize("quant", ["q2_k", "iq4_xs", "q5_1"])
def test_new_types_export_and_pass_verification_in_llama_cpp(quant, tiny_model, tmp_path):
    pytest.importorskip("llama_cpp")
    result = export_gguf(tiny_model("llama3"), tmp_path / f"{quant}.gguf", quant)
    assert result.verification["passed"], [c for c in result.verification["checks"]
                                           if c["passed"] is False]


def test_expert_layers_take_the_ffn_down_rule_of_their_own_layer():
    """llama.cpp reads an MoE tensor's layer from its name (layer_info): a layer with both
    ffn_down_exps and ffn_down_shexp (Qwen2-MoE) gives both the layer's type. Q4_K_M, 8
    layers: use_more_bits picks layers 0, 3, 6 and 7 for Q6_K."""
    from engine.export.mixtures import TypePlanner

    planner = TypePlanner("q4_k_m", 8, has_output=True, n_expert=4)
    types = {}
    for layer in range(8):
        for kind in ("ffn_down_exps", "ffn_down_shexp"):
            name = f"blk.{layer}.{kind}.weight"
            types[name] = planner.type_for(name, (256, 512)).name
    six = {layer for layer in range(8) if types[f"blk.{layer}.ffn_down_exps.weight"] == "Q6_K"}
    assert six == {0, 3, 6, 7}
    assert all(types[f"blk.{i}.ffn_down_shexp.weight"] == types[f"blk.{i}.ffn_down_exps.weight"]
               for i in range(8))


@pytest.mark.parametrize("quant", ["q2_k", "iq4_xs"])
def test_the_free_space_check_asks_for_at_least_the_file_it_writes(quant, tmp_path):
    """The plan sizes the file from its tensor plan. A tied embedding padded to 65536 rows of
    64 (Q6_K -> Q8_0: 8.5 bits a weight) is most of this model: the per-type average the
    check used (Q2_K 0.52, IQ4_XS 0.69 bytes a weight) asked for less than the file."""
    from engine.export.plan import METADATA_BYTES, plan_export
    from engine.tiny_models import cached_tiny_model

    base = cached_tiny_model("qwen2", vocab_multiple=65536)
    plan = plan_export(base, tmp_path / f"{quant}.gguf", quant)
    result = export_gguf(base, tmp_path / f"{quant}.gguf", quant, verify=False)
    assert result.size_bytes <= plan.needed_bytes <= result.size_bytes + METADATA_BYTES
