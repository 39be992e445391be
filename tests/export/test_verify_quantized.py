"""The quantized-export check (issues 17, 21): llama.cpp on the file against MLX on the weights
the file should hold (each quantized tensor decoded from its planned type, in memory) with
llama.cpp's activation rounding emulated. Correct files pass where the old check (MLX on the
unrounded weights) failed them; files that compute something else fail, naming the logits and
where they part, even where every next token still agrees."""
from __future__ import annotations

import numpy as np
import pytest

from engine.export.architectures import arch_info
from engine.export.gguf_export import export_gguf
from engine.export.safetensors_stream import list_tensors
from engine.export.verify import verify_llama_cpp
from engine.export.vocab import read_vocab
from engine.export.write import plan_tensors
from engine.models.load import read_config
from tests.export.broken_gguf import BROKEN_KINDS, seeded_imatrix
from tests.export.helpers import failed_checks

WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8}
CHECK = "llama.cpp next token = MLX"


def _check_of(checks: list[dict]) -> dict:
    return next(c for c in checks if c["name"] == CHECK)


def _verify_file(path, src, quant: str, imatrix=None) -> dict:
    """verify_llama_cpp's next-token check of ``path`` as the export of ``src`` at ``quant``."""
    config = read_config(src)
    a = arch_info(config)
    planned = plan_tensors(a, list_tensors(src), quant, imatrix=imatrix)
    rows = next(p.shape[0] for p in planned if p.name == "token_embd.weight")
    return _check_of(verify_llama_cpp(path, vocab=read_vocab(src, config, rows), model_dir=src,
                                      quant=quant, adapter_dir=None, base_dir=src,
                                      planned=planned, arch=a))


def _assert_broken_fail(good_path, src, quant, kinds, tmp_path):
    for kind in kinds:
        bad = tmp_path / f"{kind.replace(' ', '-')}.gguf"
        what = BROKEN_KINDS[kind](good_path, bad)
        check = _verify_file(bad, src, quant)
        assert check["passed"] is False, (kind, what, check["detail"])
        assert check["detail"].startswith("logits too far from position"), check["detail"]
        assert "does not compute what the weights it should hold compute" in check["detail"]


@pytest.mark.slow
def test_llama3_256_wide_q4_k_m_passes_and_every_broken_kind_fails(tiny_model, tmp_path):
    """The correct Q4_K_M file failed the old check (82.7% against the 90% bar); now it passes,
    and a file with two ffn_down swapped, one attn_q with its rows reversed, rope_freqs
    flattened (llama 3's table) or one norm halved fails on its logits."""
    src = tiny_model("llama3", **WIDE)
    good = export_gguf(src, tmp_path / "good.gguf", "q4_k_m")
    assert good.verification["passed"], failed_checks(good.verification)
    check = _check_of(good.verification["checks"])
    assert "rounded as the file stores them" in check["detail"]
    assert check["rounded_reference"]["left_unrounded"] == 0
    assert check["rounded_reference"]["activations_unrounded"] == 0
    assert check["agreement_with_ties"] >= 0.9 and check["logit_ratio"] < 0.8
    _assert_broken_fail(good.path, src, "q4_k_m", list(BROKEN_KINDS), tmp_path)


@pytest.mark.parametrize("quant", ["q2_k", "q8_0"])
def test_qwen2_passes_and_broken_files_fail_though_the_next_tokens_agree(quant, tiny_model,
                                                                          tmp_path):
    """64 wide: every matrix takes the 32-value fallbacks. The broken files keep 97-100% of
    the next tokens (the old check passed them); their logits move 10-40x the bound."""
    src = tiny_model("qwen2")
    good = export_gguf(src, tmp_path / "good.gguf", quant)
    assert good.verification["passed"], failed_checks(good.verification)
    _assert_broken_fail(good.path, src, quant, ["swapped", "wrong tensor", "norm"], tmp_path)


@pytest.mark.slow
def test_gemma_256_wide_q8_0_passes_and_a_halved_norm_fails(tiny_model, tmp_path):
    """Gemma's tiny fixture hardly moves its next tokens (100% agree even for broken files):
    the logit bound alone catches them."""
    src = tiny_model("gemma", **WIDE)
    good = export_gguf(src, tmp_path / "good.gguf", "q8_0")
    assert good.verification["passed"], failed_checks(good.verification)
    _assert_broken_fail(good.path, src, "q8_0", ["norm", "wrong tensor"], tmp_path)


@pytest.mark.slow
def test_granite_moe_with_swapped_experts_fails(tiny_model, tmp_path):
    """The broken Granite MoE copy passed the old check at 98.7% (its next token hardly
    depends on the experts)."""
    from tests.export.moe_helpers import swapped_experts_copy

    src = tiny_model("granitemoe")
    good = export_gguf(src, tmp_path / "good.gguf", "q4_k_m")
    assert good.verification["passed"], failed_checks(good.verification)
    broken = swapped_experts_copy(src, tmp_path / "broken")
    bad = export_gguf(broken, tmp_path / "broken.gguf", "q4_k_m", verify=False)
    check = _verify_file(bad.path, src, "q4_k_m")
    assert check["passed"] is False, check["detail"]
    assert "logits too far" in check["detail"]


@pytest.mark.slow
def test_qwen3_5_moe_with_an_importance_matrix_passes(tiny_model, tmp_path):
    """Qwen3.5's reordered value heads are rounded in the file's layout with the file's
    importance rows: the rounded reference holds the file's values (all tensors, none left
    unrounded) and the check passes."""
    src = tiny_model("qwen3_5_moe")
    imx = seeded_imatrix(src, "q4_k_m")
    good = export_gguf(src, tmp_path / "good.gguf", "q4_k_m", imatrix=imx)
    assert good.verification["passed"], failed_checks(good.verification)
    check = _check_of(good.verification["checks"])
    assert check["rounded_reference"]["left_unrounded"] == 0


def test_rounded_reference_of_moved_tensors_uses_the_importance_rows(tiny_model, tmp_path):
    """The MLX reference's weights are the file's, value for value, for Qwen3.5-MoE with an
    importance matrix (its ChangedRef tensors were rounded without the matrix before)."""
    import gguf
    from gguf import quants

    from engine.export.verify import rounded_folder

    src = tiny_model("qwen3_5_moe")
    imx = seeded_imatrix(src, "q4_k_m")
    planned = plan_tensors(arch_info(read_config(src)), list_tensors(src), "q4_k_m",
                           imatrix=imx)
    counts = rounded_folder(src, planned, tmp_path / "r")
    assert counts["left_unrounded"] == 0
    q = export_gguf(src, tmp_path / "q.gguf", "q4_k_m", verify=False, imatrix=imx)
    f = export_gguf(tmp_path / "r", tmp_path / "r.gguf", "f32", verify=False)
    ours = {t.name: t for t in gguf.GGUFReader(str(f.path)).tensors}
    differ = [t.name for t in gguf.GGUFReader(str(q.path)).tensors if not np.array_equal(
        quants.dequantize(t.data, t.tensor_type),
        np.asarray(ours[t.name].data).reshape(quants.dequantize(t.data, t.tensor_type).shape))]
    assert differ == []


def test_activation_rounding_equals_ggml_q8_0():
    """The Q8_0 activation rounding is ggml's Q8_0 block (gguf-py's reference quantizer)."""
    import mlx.core as mx
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    from engine.export.activation_rounding import round_activations

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((5, 256)) * rng.gamma(1.0, 1.0, (5, 1))).astype(np.float32)
    x[0] = 0.0
    want = quants.dequantize(quants.quantize(x, T.Q8_0), T.Q8_0)
    got = np.array(round_activations(mx.array(x), "q8_0"))
    assert np.array_equal(got, want)
    k = np.array(round_activations(mx.array(x), "q8_k"))
    assert np.all(np.abs(k - x) <= np.abs(x).max(-1, keepdims=True) / 254 * 1.0001)
    assert not np.array_equal(k, x)
