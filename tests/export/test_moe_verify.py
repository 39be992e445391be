"""Quantized mixture-of-experts files (issue 17 follow-up): llama.cpp's next-token check runs
against MLX on the file's own rounded weights, with router near-ties counted, so a correct file
passes where rounding moves tokens to other experts, and a file with blocks mixed up fails."""
from __future__ import annotations

import numpy as np
import pytest

from engine.export.architectures import arch_info
from engine.export.gguf_export import export_gguf
from engine.export.safetensors_stream import list_tensors
from engine.export.verify import (ROUTER_TIE, TOLERANCES, compare_logits, rounded_folder,
                                  verify_llama_cpp)
from engine.export.vocab import read_vocab
from engine.export.write import plan_tensors
from engine.models.load import read_config
from tests.export.helpers import failed_checks
from tests.export.moe_helpers import swapped_experts_copy


def _next_token_check(verification_checks: list[dict]) -> dict:
    return next(c for c in verification_checks if c["name"] == "llama.cpp next token = MLX")


def test_trained_moe_q8_0_passes_and_a_mixed_up_copy_fails(tiny_model, tmp_path):
    """The trained, fused Qwen3.5-MoE at Q8_0: against MLX on the unrounded weights 85.9% of
    positions agree (bar 95%) though the file is llama.cpp's own quantizer's output."""
    from engine.fuse import fuse_adapter
    from tests.families.chain import trained

    info = trained(tiny_model("qwen3_5_moe"), tmp_path, "moe-verify")
    good = fuse_adapter(info.name, tmp_path / "fused")
    result = export_gguf(good, tmp_path / "good.gguf", "q8_0")
    check = _next_token_check(result.verification["checks"])
    assert result.verification["passed"], failed_checks(result.verification)
    assert "rounded as the file stores them" in check["detail"]
    assert check["rounded_reference"]["left_unrounded"] == 0

    broken = swapped_experts_copy(good, tmp_path / "broken")
    bad = export_gguf(broken, tmp_path / "broken.gguf", "q8_0", verify=False)
    config = read_config(good)
    a = arch_info(config)
    planned = plan_tensors(a, list_tensors(good), "q8_0")
    rows = next(p.shape[0] for p in planned if p.name == "token_embd.weight")
    checks = verify_llama_cpp(bad.path, vocab=read_vocab(good, config, rows), model_dir=good,
                              quant="q8_0", adapter_dir=None, base_dir=good, planned=planned,
                              arch=a)
    logits = _next_token_check(checks)
    assert logits["passed"] is False, logits["detail"]
    assert logits["agreement_with_ties"] < 0.5


@pytest.mark.parametrize("kind", ["qwen3_5_moe", "qwen3_next", "granitemoehybrid_moe"])
def test_rounded_folder_holds_the_files_weights(kind, tiny_model, tmp_path):
    """MLX's reference weights are the file's, value for value: the rounded folder written at
    F32 equals the Q4_K_M file dequantized (reordered value heads, Qwen3-Next's split qkvz and
    Granite's split shared MLP and fused expert gate_up included)."""
    import gguf
    from gguf import quants

    src = tiny_model(kind)
    a = arch_info(read_config(src))
    counts = rounded_folder(src, plan_tensors(a, list_tensors(src), "q4_k_m"), tmp_path / "r")
    assert counts["rounded"] > 0 and counts["left_unrounded"] == 0
    q = export_gguf(src, tmp_path / "q.gguf", "q4_k_m", verify=False)
    f = export_gguf(tmp_path / "r", tmp_path / "r.gguf", "f32", verify=False)
    ours = {t.name: t for t in gguf.GGUFReader(str(f.path)).tensors}
    quantized = 0
    for t in gguf.GGUFReader(str(q.path)).tensors:
        values = quants.dequantize(t.data, t.tensor_type)
        quantized += t.tensor_type.name not in ("F32", "F16")
        assert np.array_equal(values, np.asarray(ours[t.name].data).reshape(values.shape)), t.name
    assert quantized > 10


def test_a_flip_where_the_router_was_nearly_tied_counts_as_a_near_tie():
    ref = [np.array([[5.0, 0.0, 0.0], [5.0, 0.0, 0.0]], np.float32)]
    got = [np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]], np.float32)]  # both clear flips
    tol = TOLERANCES["q8_0"]
    plain = compare_logits(ref, got, tol)
    routed = compare_logits(ref, got, tol, [np.array([ROUTER_TIE / 2, ROUTER_TIE * 2])])
    assert plain["near_ties"] == 0 and routed["near_ties"] == 1
    assert routed["agreement_with_ties"] == 0.5
