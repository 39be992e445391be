"""The Model page reads the exporter's own capability table (issue 13: it said GGUF export did
not support Mistral)."""
from __future__ import annotations

import json
import shutil


def test_model_page_says_mistral_exports_to_gguf(tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = tmp_path / "tiny-mistral"
    shutil.copytree(tiny_model("llama3"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"])
    (folder / "config.json").write_text(json.dumps(cfg))
    assert describe_model(folder)["gguf"] == "yes"


def test_model_page_says_why_an_unsupported_family_does_not_export(tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = tmp_path / "tiny-falcon"
    shutil.copytree(tiny_model("llama3"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="falcon", architectures=["FalconForCausalLM"])
    (folder / "config.json").write_text(json.dumps(cfg))
    assert describe_model(folder)["gguf"].startswith("no: GGUF export does not support falcon")
