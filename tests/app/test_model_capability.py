"""The Model page reads the exporter's own capability table (issue 13: it said GGUF export did
not support Mistral)."""
from __future__ import annotations

from tests.conftest import edited_copy


def test_model_page_says_mistral_exports_to_gguf(tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = edited_copy(tiny_model("llama3"), tmp_path / "tiny-mistral", config={
        "model_type": "mistral", "architectures": ["MistralForCausalLM"]})
    assert describe_model(folder)["gguf"] == "yes"


def test_model_page_says_why_an_unsupported_family_does_not_export(tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = edited_copy(tiny_model("llama3"), tmp_path / "tiny-falcon", config={
        "model_type": "falcon", "architectures": ["FalconForCausalLM"]})
    assert describe_model(folder)["gguf"].startswith("no: GGUF export does not support falcon")
