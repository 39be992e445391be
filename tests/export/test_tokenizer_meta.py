"""The pre-tokenizer written for the tiny BPE models (identified by tokenizer.json's structure:
tests/export/test_pretokenizer_identity.py) and the Mistral spelling of the llama
architecture."""
from __future__ import annotations

import json
import shutil

import gguf
import pytest

from engine.export.gguf_export import export_gguf

from .helpers import failed_checks


@pytest.mark.parametrize("kind,pre", [("llama3", "llama-bpe"), ("qwen2", "qwen2"),
                                      ("qwen3", "qwen2")])
def test_pre_tokenizer_from_the_split_regex_is_written(kind, pre, tiny_model, tmp_path):
    folder = tiny_model(kind)
    result = export_gguf(folder, tmp_path / "m.gguf", "f32", verify=False)
    assert result.metadata["pre_tokenizer"] == pre
    assert "split regex" in result.metadata["pre_tokenizer_source"]
    f = gguf.GGUFReader(str(tmp_path / "m.gguf")).fields["tokenizer.ggml.pre"]
    assert bytes(f.parts[f.data[0]]).decode() == pre


def test_mistral_exports_as_llama(tiny_model, tmp_path):
    folder = tmp_path / "mistral"
    shutil.copytree(tiny_model("llama2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=None)
    (folder / "config.json").write_text(json.dumps(cfg))
    result = export_gguf(folder, tmp_path / "mistral.gguf", "f32")
    assert result.metadata["architecture"] == "llama"
    assert result.verification["passed"], failed_checks(result.verification)
