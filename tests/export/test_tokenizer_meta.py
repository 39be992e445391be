"""Pre-tokenizer choice (known hash, then tokenizer.json's split regex, then model type) and
the Mistral spelling of the llama architecture."""
from __future__ import annotations

import json
import shutil

import gguf
import pytest
from transformers import AutoTokenizer

from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from engine.export.vocab import choose_pre_tokenizer, pre_tokenizer_hash

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


def test_pre_tokenizer_order_hash_then_regex_then_model_type(tiny_model):
    folder = tiny_model("qwen2")
    hf = AutoTokenizer.from_pretrained(str(folder))
    tok_json = json.loads((folder / "tokenizer.json").read_text())
    # a known hash wins over the regex
    known = {pre_tokenizer_hash(hf): "smollm"}
    assert choose_pre_tokenizer(hf, tok_json, "qwen2", known=known)[0] == "smollm"
    # no regex at all: the model type decides
    no_regex = {"pre_tokenizer": {"type": "Whitespace"}}
    assert choose_pre_tokenizer(hf, no_regex, "llama") == ("llama-bpe", "model type llama")
    # nothing to go on: refused rather than tokenizing differently from training
    with pytest.raises(TailorError) as e:
        choose_pre_tokenizer(hf, no_regex, "starcoder2")
    assert "pre-tokenizer" in e.value.message


def test_mistral_exports_as_llama(tiny_model, tmp_path):
    folder = tmp_path / "mistral"
    shutil.copytree(tiny_model("llama2"), folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="mistral", architectures=["MistralForCausalLM"], sliding_window=None)
    (folder / "config.json").write_text(json.dumps(cfg))
    result = export_gguf(folder, tmp_path / "mistral.gguf", "f32")
    assert result.metadata["architecture"] == "llama"
    assert result.verification["passed"], failed_checks(result.verification)
