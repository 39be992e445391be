"""The export record (``<file>.gguf.json``) says which tokenizer the GGUF's vocabulary was read
with and why, as the training record does (engine/models/tokenizer.py TokenizerChoice)."""
from __future__ import annotations

import json

from engine.cli import main
from engine.models.tokenizer import load_hf_tokenizer
from tests.tokenizer_cases import llama2_real_config


def _export_record(model, out, capsys) -> dict:
    assert main(["export", "--model", str(model), "--quant", "f32", "--out", str(out),
                 "--no-verify"]) == 0, capsys.readouterr().err
    return json.loads(out.with_name(out.name + ".json").read_text())["metadata"]


def test_the_record_names_a_replaced_tokenizer_and_why(tmp_path, capsys):
    from engine.tiny_models import cached_tiny_model

    model = llama2_real_config(cached_tiny_model, tmp_path / "llama2-real-config")
    choice = _export_record(model, tmp_path / "out.gguf", capsys)["tokenizer_choice"]
    # transformers rebuilds LlamaTokenizer from source; the model's tokenizer.json is used
    assert choice["source"] == "tokenizer.json" and choice["loaded_class"] == "LlamaTokenizer"
    assert choice["reason"].startswith("tokenizer built from tokenizer.json")
    assert choice["differences"] and choice["compared"] > 0
    assert choice == load_hf_tokenizer(model).tailor_choice.to_dict()  # what training records


def test_the_record_says_an_unchanged_tokenizer_loaded_as_it_is(tiny_model, tmp_path, capsys):
    choice = _export_record(tiny_model("qwen2"), tmp_path / "q.gguf", capsys)["tokenizer_choice"]
    assert choice["source"] == "transformers" and choice["differences"] == []
    assert choice["loaded_class"] and choice["compared"] > 0
