"""SmolLM3, OLMo 2, Granite (dense), Phi-4-mini, Ministral 3 (text), Granite 4 hybrid (dense:
Mamba-2 + attention) and Qwen3.5 (hybrid Gated DeltaNet + gated attention), end to end (issue 17): each tiny fixture (the family's
config keys, tokenizer kind and chat template) trained a few steps with LoRA, fused, exported to
F32 and Q8_0 and checked in llama.cpp, its adapter alone as a GGUF LoRA applied by llama.cpp,
its Ollama template rendering what the Jinja template renders."""
from __future__ import annotations

import pytest

from engine.events import TailorError
from engine.export.architectures import arch_info
from engine.export.gguf_export import export_gguf
from engine.tiny_models import FAMILY_SPECS
from tests.conftest import edited_copy
from tests.export.helpers import failed_checks

from .chain import exact_fused_f32, ollama_renders_as_jinja, trained, whole_chain_verified

DENSE = ["smollm3", "olmo2", "granite", "phi4mini", "ministral3", "granitemoehybrid"]


@pytest.mark.parametrize("kind", DENSE)
def test_trained_fused_exported_and_verified_in_llama_cpp(kind, tiny_model, tmp_path):
    whole_chain_verified(kind, tiny_model(kind), tmp_path)


@pytest.mark.parametrize("kind", DENSE + ["qwen3_5"])
def test_ollama_template_renders_the_jinja_prompt(kind, tiny_model):
    ollama_renders_as_jinja(tiny_model(kind))


def test_fixtures_carry_the_family_config_keys():
    assert FAMILY_SPECS["smollm3"].config["no_rope_layers"] == [1, 1, 1, 0]
    granite = FAMILY_SPECS["granite"].config
    for key in ("attention_multiplier", "embedding_multiplier", "residual_multiplier",
                "logits_scaling"):
        assert granite[key] != 1.0, key  # a dropped multiplier changes the logits


def test_smollm3_with_other_nope_layers_is_refused(tiny_model, tmp_path):
    """llama.cpp runs NoPE on every 4th layer whatever the config says: another layout would
    load and answer differently, so it is refused before anything is written."""
    odd = edited_copy(tiny_model("smollm3"), tmp_path / "odd", config={
        "no_rope_layers": [1, 1, 0, 1]})
    with pytest.raises(TailorError) as e:
        export_gguf(odd, tmp_path / "odd.gguf", "f32")
    assert "every 4th layer" in e.value.message and str(odd) in e.value.message
    assert not (tmp_path / "odd.gguf").exists()


def test_tied_olmo2_is_refused_with_the_reason():
    with pytest.raises(TailorError, match="separate output tensor"):
        arch_info({"model_type": "olmo2", "tie_word_embeddings": True,
                   "num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 8}, "/m")


def test_phi4_mini_longrope_carries_the_factors_mlx_trained_with(tiny_model, tmp_path):
    """mlx-lm's SuScaledRoPE applies the long factors at every length (and the attention
    factor to the rotated 3/4 of each head): both GGUF tables hold them, so llama.cpp answers
    as the trained model whatever its context size (the F32 test above runs n_ctx 256, where
    llama.cpp reads the short table)."""
    import math

    import gguf
    import numpy as np

    folder = tiny_model("phi4mini")
    out = tmp_path / "phi4.gguf"
    export_gguf(folder, out, "f32", verify=False)
    reader = gguf.GGUFReader(str(out))
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    rs = FAMILY_SPECS["phi4mini"].config["rope_scaling"]
    assert np.array_equal(tensors["rope_factors_long.weight"], rs["long_factor"])
    assert np.array_equal(tensors["rope_factors_short.weight"], rs["long_factor"])
    assert int(reader.fields["phi3.rope.dimension_count"].parts[-1][0]) == 12  # 16 x 0.75
    attn = float(reader.fields["phi3.rope.scaling.attn_factor"].parts[-1][0])
    assert attn == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)), rel=1e-6)


def test_ministral3_yarn_and_attention_temperature_are_written(tiny_model, tmp_path):
    """The fixture's original context is 8 positions, so the F32 test above runs Llama 4's
    attention temperature from position 8 on; here the keys llama.cpp reads for it."""
    import gguf

    out = tmp_path / "m3.gguf"
    export_gguf(tiny_model("ministral3"), out, "f32", verify=False)
    fields = gguf.GGUFReader(str(out)).fields

    def value(key):
        return float(fields[key].parts[-1][0])

    assert value("mistral3.attention.temperature_scale") == pytest.approx(0.1)
    assert value("mistral3.rope.scaling.yarn_log_multiplier") == 1.0
    assert value("mistral3.rope.scaling.factor") == 16.0
    assert value("mistral3.rope.scaling.original_context_length") == 8
    assert value("mistral3.rope.freq_base") == 1000000.0


def test_mistral3_with_its_vision_tower_is_refused_with_the_reason():
    with pytest.raises(TailorError) as e:
        arch_info({"model_type": "mistral3", "text_config": {"model_type": "ministral3"}}, "/m")
    assert "vision" in e.value.message and "ministral3" in e.value.message


def test_qwen3_5_hybrid_attention_trained_fused_and_verified(tiny_model, tmp_path):
    """Qwen3.5: three Gated DeltaNet layers and one gated attention layer, 2 key heads for 4
    value heads. The base is in the Hugging Face layout, the fused folder in mlx-lm's
    (language_model. names, 1 + w norms, [C, K, 1] conv kernel): both export and answer as MLX;
    the adapter alone as a GGUF LoRA too."""
    model_dir = tiny_model("qwen3_5")
    base = export_gguf(model_dir, tmp_path / "base.gguf", "f32")
    assert base.verification["passed"], failed_checks(base.verification)
    info = trained(model_dir, tmp_path, "q35-lora", learning_rate=3e-3)
    exact_fused_f32("qwen3_5", model_dir, info, tmp_path / "q35-f32.gguf")
    for quant in ("f16", "q8_0"):
        result = export_gguf(info.name, tmp_path / f"q35-{quant}.gguf", quant)
        assert result.verification["passed"], failed_checks(result.verification)
    # the adapter's linear-attention tensors reordered as the base's (B rows / out_proj's A)
    lora = export_gguf(info.name, tmp_path / "q35-lora.gguf", "f32", adapter_only=True)
    assert lora.verification["passed"], failed_checks(lora.verification)


def test_qwen3_5_value_heads_must_be_tiled_for_llama_cpp(tiny_model, tmp_path, monkeypatch):
    """Without the reordering of the value heads (grouped by key head -> tiled) the file loads
    in llama.cpp and answers differently: the verification catches it."""
    import engine.export.qwen35 as qwen35

    monkeypatch.setattr(qwen35, "tile_value_heads", lambda w, *a: w)
    result = export_gguf(tiny_model("qwen3_5"), tmp_path / "wrong.gguf", "f32")
    assert not result.verification["passed"]


def test_qwen3_5_adapter_gguf_needs_the_same_reordering(tiny_model, tmp_path, monkeypatch):
    """An adapter GGUF whose linear-attention LoRA tensors are not reordered like the base's
    loads in llama.cpp and answers differently: the adapter verification catches it."""
    import engine.export.qwen35 as qwen35

    info = trained(tiny_model("qwen3_5"), tmp_path, "q35-unordered", learning_rate=3e-3)
    monkeypatch.setattr(qwen35, "qwen35_lora",  # the base stays reordered, the adapter not
                        lambda config, module, la, lb: (module.removeprefix("language_model."),
                                                        la, lb))
    lora = export_gguf(info.name, tmp_path / "unordered.gguf", "f32", adapter_only=True)
    assert not lora.verification["passed"]

