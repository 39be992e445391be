"""A tokenizer whose pre-tokenizer llama.cpp does not implement is refused for GGUF (it would
tokenize differently from training), and written only with --allow-tokenizer-mismatch, the
closest type and the measured mismatch rate then recorded (issue 12)."""
from __future__ import annotations

import json

import pytest
from tokenizers import pre_tokenizers

from engine.cli import main
from engine.events import TailorError
from engine.export.gguf_export import export_gguf, record_path
from tests.conftest import snapshot_tree

from .pretok_models import _byte_level, _split, model_with_tokenizer, rich_corpus, train_tokenizer

# Two words kept together as one piece: no llama.cpp type splits like this, and a vocabulary
# trained with it holds two-word tokens that llama.cpp can never produce.
WORD_PAIRS = r" ?\p{L}+ \p{L}+| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"


@pytest.fixture(scope="module")
def word_pair_model(tmp_path_factory):
    from engine.tiny_models import cached_tiny_model

    tok = train_tokenizer(pre_tokenizers.Sequence([_split(WORD_PAIRS), _byte_level(False)]),
                          vocab_size=3000, texts=rich_corpus())
    return model_with_tokenizer(cached_tiny_model("llama3"),
                                tmp_path_factory.mktemp("pairs") / "word-pairs", tok)


def test_an_unreproducible_pre_tokenizer_is_refused_and_nothing_is_written(word_pair_model,
                                                                          tmp_path):
    before = snapshot_tree(word_pair_model)
    (tmp_path / "exports").mkdir()
    out = tmp_path / "exports" / "m.gguf"
    events = []
    with pytest.raises(TailorError) as e:
        export_gguf(word_pair_model, out, "f32", report=events.append)
    assert events == []  # refused before any work starts (for an adapter: before the fuse)
    msg = e.value.message
    assert f"{word_pair_model / 'tokenizer.json'}: llama.cpp has no pre-tokenizer that " \
           "reproduces this one" in msg
    assert "Split(' ?\\\\p{L}+ \\\\p{L}+|" in msg  # names the split llama.cpp lacks
    assert "no llama.cpp type has these split regexes" in msg
    assert "the closest, '" in msg and "corpus strings differently" in msg
    assert "so it was not written" in msg
    hint = e.value.hint
    assert "fused model folder" in hint and "MLX adapter" in hint
    assert "--allow-tokenizer-mismatch" in hint
    assert list((tmp_path / "exports").iterdir()) == []  # no file, no temporary left over
    assert snapshot_tree(word_pair_model) == before


def test_with_the_flag_the_closest_type_is_written_and_the_mismatch_rate_recorded(
        word_pair_model, tmp_path):
    out = tmp_path / "m.gguf"
    result = export_gguf(word_pair_model, out, "f32", allow_tokenizer_mismatch=True)
    meta = result.metadata
    match = meta["pre_tokenizer_match"]
    assert meta["pre_tokenizer"] == match["closest"]
    assert meta["pre_tokenizer_mismatch_allowed"] is True
    assert meta["pre_tokenizer_source"].startswith("NOT an exact match")
    check = next(c for c in result.verification["checks"]
                 if c["name"] == "llama.cpp tokenization")
    assert check["passed"] is None  # accepted by the flag: recorded, not failed
    assert 0 < check["mismatch_rate"] == meta["tokenizer_mismatch_rate"]
    assert check["strings"] == meta["tokenizer_corpus_strings"] >= 300
    assert f"differ ({check['mismatch_rate']:.1%})" in check["detail"]
    assert "exported with --allow-tokenizer-mismatch" in check["detail"]
    assert check["differing"][0]["training"] != check["differing"][0]["llama_cpp"]
    record = json.loads(record_path(out).read_text())
    assert record["metadata"]["tokenizer_mismatch_rate"] == check["mismatch_rate"]
    assert result.verification["passed"]  # the rest of the checks hold


def test_the_cli_refuses_and_accepts_the_flag(word_pair_model, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    assert main(["export", "--model", str(word_pair_model), "--quant", "f32", "--out",
                 str(out), "--no-verify"]) == 1
    assert "llama.cpp has no pre-tokenizer that reproduces" in capsys.readouterr().err
    assert not out.exists()
    assert main(["export", "--model", str(word_pair_model), "--quant", "f32", "--out",
                 str(out), "--no-verify", "--allow-tokenizer-mismatch"]) == 0
    record = json.loads(record_path(out).read_text())
    assert record["metadata"]["pre_tokenizer_mismatch_allowed"] is True
