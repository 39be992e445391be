"""One capability table (engine/capabilities.py) read by the exporter, `tailor model info`, the
Ollama hand-off and the app (issue 13: the Model page said GGUF export did not support Mistral
while the exporter wrote it)."""
from __future__ import annotations

import pytest

from engine import capabilities
from engine.capabilities import ARCHITECTURES, GGUF_MODEL_TYPES, gguf_support
from engine.events import TailorError
from tests.conftest import edited_copy


def _mistral(tiny_model, tmp_path):
    """The tiny Llama relabelled as Mistral (Mistral's config is Llama's)."""
    return edited_copy(tiny_model("llama3"), tmp_path / "tiny-mistral", config={
        "model_type": "mistral", "architectures": ["MistralForCausalLM"]})


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_the_exporter_writes_each_row_as_the_table_says(model_type):
    from engine.export.architectures import arch_info

    row = ARCHITECTURES[model_type]
    cfg = {"model_type": model_type, "num_hidden_layers": 1, "num_attention_heads": 1,
           "hidden_size": 8}
    assert arch_info(cfg, "x").arch == row.gguf


def test_the_exporter_refuses_what_the_table_lacks_naming_the_table():
    from engine.export.architectures import arch_info

    with pytest.raises(TailorError) as e:
        arch_info({"model_type": "falcon", "architectures": ["FalconForCausalLM"]}, "/m")
    assert "'falcon'" in e.value.message
    assert ", ".join(sorted(GGUF_MODEL_TYPES)) in e.value.message
    assert not gguf_support({"model_type": "falcon"})[0]
    # Gemma 3 with a vision tower is model_type gemma3, which the exporter never wrote
    ok, why = gguf_support({"model_type": "gemma3", "text_config": {}})
    assert not ok and "vision tower" in why


def test_model_info_says_mistral_exports_to_gguf(tiny_model, tmp_path):
    from engine.models.cli import model_info

    info = model_info(_mistral(tiny_model, tmp_path))
    assert info["architecture"] == "mistral"
    assert info["gguf_export"] is True
    assert "mistral" in info["gguf_supported_architectures"]
    assert "gemma3" not in info["gguf_supported_architectures"]  # the old list had it


def test_ollama_adapter_check_follows_the_table():
    from engine.ollama.cli import gguf_architecture
    from engine.ollama.handoff import check_adapter_architecture

    for row in ARCHITECTURES.values():
        if row.ollama_adapter:
            check_adapter_architecture(gguf_architecture(row.model_type))
        else:
            with pytest.raises(TailorError, match="Ollama cannot apply a LoRA adapter"):
                check_adapter_architecture(gguf_architecture(row.model_type))
    assert capabilities.ollama_applies_adapter("llama")  # Mistral's adapters too
    assert gguf_architecture("mistral") == "llama"


def test_no_second_copy_of_the_table_in_the_engine():
    """The lists that drifted are gone; every reader imports engine.capabilities."""
    import engine.export.architectures as exporter
    import engine.models.load as load
    import engine.ollama.handoff as handoff

    assert not hasattr(load, "GGUF_ARCHITECTURES")
    assert not hasattr(exporter, "SUPPORTED")
    assert not hasattr(handoff, "ADAPTER_ARCHITECTURES")
