"""The GGUF vocabulary read without transformers (engine/export/vocab_files.py) is the one read
with the training tokenizer, for every fixture tokenizer and llama.cpp's real vocabularies: the
add-flags, the eos id and the pre-tokenizer hash that decide the file's metadata."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest

from engine.export.vocab import load_hf_tokenizer, read_vocab
from engine.export.vocab_files import (OWN_CLASS_MODEL_TYPES, TRANSFORMERS_VERSION,
                                       file_tokenizer, needs_transformers)
from engine.models.folder_files import model_files
from engine.models.load import read_config
from engine.tiny_models import ALL_KINDS, FAMILY_KINDS

# fixture kinds whose tokenizer is the generic class on a model type without a class of its own
FILE_KINDS = {"llama3", "qwen3", "smollm3", "olmo2", "granite", "qwen3_moe", "granitemoe",
              "gpt_oss", "qwen3_next", "granitemoehybrid", "granitemoehybrid_moe",
              "gpt_oss_mxfp4"}


def _inputs(folder):
    files = model_files(folder)
    cfg_path, json_path = files.get("tokenizer_config.json"), files.get("tokenizer.json")
    tok_cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path else {}
    tok_json = json.loads(json_path.read_text(encoding="utf-8")) if json_path else None
    return files, tok_json, tok_cfg, read_config(folder)


def _both_ways(folder, **options) -> tuple[bool, dict, dict]:
    """(read from the files?, the vocabulary as read by default, as read with the training
    tokenizer), tokenizer_choice left out (it says which way was taken)."""
    files, tok_json, tok_cfg, config = _inputs(folder)
    by_files = file_tokenizer(files, tok_json, tok_cfg, config) is not None
    n_rows = int(config["vocab_size"])
    new = dataclasses.asdict(read_vocab(folder, config, n_rows, **options))
    old = dataclasses.asdict(read_vocab(folder, config, n_rows, **options,
                                        tokenizer=load_hf_tokenizer(folder)))
    new.pop("tokenizer_choice")
    old.pop("tokenizer_choice")
    return by_files, new, old


@pytest.mark.parametrize("kind", ALL_KINDS + FAMILY_KINDS)
def test_the_vocabulary_read_from_the_files_is_the_training_tokenizers(kind, tiny_model):
    by_files, new, old = _both_ways(tiny_model(kind))
    assert by_files == (kind in FILE_KINDS)
    assert new == old


@pytest.mark.parametrize("flags", [{"add_bos_token": False}, {"add_eos_token": True},
                                   {"add_bos_token": True, "add_eos_token": True},
                                   {"add_bos_token": None}, {}])
@pytest.mark.parametrize("post_processor", [True, False])
def test_the_add_flags_and_post_processor_act_as_in_transformers(flags, post_processor,
                                                                 tiny_model, tmp_path):
    folder = tmp_path / "llama3"
    shutil.copytree(tiny_model("llama3"), folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("add_bos_token"), cfg.pop("add_eos_token")
    (folder / "tokenizer_config.json").write_text(json.dumps({**cfg, **flags}))
    if not post_processor:
        data = json.loads((folder / "tokenizer.json").read_text())
        (folder / "tokenizer.json").write_text(json.dumps({**data, "post_processor": None}))
    by_files, new, old = _both_ways(folder)
    assert by_files and new == old
    files, tok_json, tok_cfg, config = _inputs(folder)
    ours = file_tokenizer(files, tok_json, tok_cfg, config)
    hf = load_hf_tokenizer(folder)
    for text in ("a", "Hello world", ""):
        assert ours.encode(text) == hf.encode(text)
    assert ours.eos_token_id == hf.eos_token_id


def test_a_special_tokens_map_that_names_other_tokens_takes_transformers(tiny_model, tmp_path):
    folder = tmp_path / "llama3"
    shutil.copytree(tiny_model("llama3"), folder)
    (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))
    files, tok_json, tok_cfg, config = _inputs(folder)
    assert "special_tokens_map" in needs_transformers(files, tok_json, tok_cfg, config)
    by_files, new, old = _both_ways(folder)
    assert not by_files and new == old


def test_custom_code_still_takes_transformers_and_is_refused(tiny_model, tmp_path):
    from engine.events import TailorError

    folder = tmp_path / "llama3"
    shutil.copytree(tiny_model("llama3"), folder)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg["auto_map"] = {"AutoTokenizer": [None, "tok.MyTokenizer"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    files, tok_json, tok_cfg, config = _inputs(folder)
    assert needs_transformers(files, tok_json, tok_cfg, config) is not None
    with pytest.raises(TailorError, match="custom code"):
        read_vocab(folder, config, int(config["vocab_size"]))


def test_the_own_class_model_types_are_transformers_table():
    import transformers
    from transformers.models.auto.tokenization_auto import (
        MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, TOKENIZER_MAPPING_NAMES)

    if transformers.__version__ != TRANSFORMERS_VERSION:
        pytest.skip(f"the table is of transformers {TRANSFORMERS_VERSION}")
    generic = {"TokenizersBackend", "PythonBackend", "PreTrainedTokenizer", ""}
    own = {t for t in MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS
           if (TOKENIZER_MAPPING_NAMES.get(t) or "").removesuffix("Fast") not in generic}
    assert own == OWN_CLASS_MODEL_TYPES


@pytest.mark.parametrize("name", ["llama-bpe", "falcon"])  # the generic class's vocabularies
def test_llama_cpps_vocabularies_read_from_the_files_are_the_training_tokenizers(name, tmp_path):
    from tests.llama_vocabs import build_model_folder, read_gguf_vocab, vocab_path

    if not vocab_path(name).is_file():
        pytest.skip("llama.cpp's vocabularies are not extracted (make setup)")
    folder = build_model_folder(read_gguf_vocab(name), tmp_path / name)
    # (falcon's has no exact llama.cpp type: the closest is written, as the conformance test
    # exports it)
    by_files, new, old = _both_ways(folder, allow_tokenizer_mismatch=True)
    assert by_files and new == old


def test_a_tokenizer_json_the_tokenizers_library_rejects_is_refused_by_name(tiny_model,
                                                                            tmp_path):
    from engine.events import TailorError

    folder = tmp_path / "llama3"
    shutil.copytree(tiny_model("llama3"), folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["model"]["merges"] = [["zzzq", "qqqz"]] + data["model"]["merges"]
    (folder / "tokenizer.json").write_text(json.dumps(data))
    before = (folder / "tokenizer.json").read_bytes()
    files, tok_json, tok_cfg, config = _inputs(folder)
    assert file_tokenizer(files, tok_json, tok_cfg, config) is None  # the loader's message
    with pytest.raises(TailorError, match=r"does not load .*zzzq.* out of vocabulary"):
        read_vocab(folder, config, int(config["vocab_size"]))
    assert (folder / "tokenizer.json").read_bytes() == before


def test_malformed_added_tokens_take_the_training_tokenizers_loader(tiny_model, tmp_path):
    folder = tmp_path / "llama3"
    shutil.copytree(tiny_model("llama3"), folder)
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"][0].pop("id")
    (folder / "tokenizer.json").write_text(json.dumps(data))
    files, tok_json, tok_cfg, config = _inputs(folder)
    assert needs_transformers(files, tok_json, tok_cfg, config) == \
        "malformed added or special tokens"
