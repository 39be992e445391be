"""The export's tokenization check runs a corpus that exercises tokenizers, so a wrong
pre-tokenizer type fails verification (issue 12: the old six fixed strings passed files that
split digits, fractions and scripts differently from training)."""
from __future__ import annotations

import pytest

from engine.export.gguf_export import export_gguf
from engine.export.tokenizer_corpus import tokenizer_corpus

from .pretok_models import SPECIALS, structured_model

# Each byte-level family's structure, and a wrong type a guess could have written.
WRONG = [("llama-bpe", "qwen2"), ("qwen2", "gpt-2"), ("gpt-2", "starcoder"),
         ("starcoder", "gpt-2"), ("command-r", "gpt-2"), ("deepseek-llm", "deepseek-coder"),
         ("deepseek-coder", "deepseek-llm"), ("deepseek-v3", "llama-bpe")]


def test_the_corpus_covers_what_splits_tokenizers_apart():
    specials = ["<|im_start|>", "<|im_end|>"]
    corpus = tokenizer_corpus(specials)
    assert 300 <= len(corpus) <= 500 and len(set(corpus)) == len(corpus)
    for n in range(1, 13):  # digit runs of every length, alone and inside words
        assert any(s.isdigit() and len(s) == n for s in corpus)
        assert any(s.startswith("abc") and s[3:-3].isdigit() and len(s) == n + 6
                   for s in corpus)
    text = "\n".join(corpus)
    for piece in ["4 ½", "²", "€", "₹", "我想", "مرحبا", "नमस्ते", "สวัสดี", "Привет",
                  "\U0001F3FD", "\u200d", "\n\treturn", "\t\ttwo tabs", "    indented", "   ",
                  "\r\n", "'RE", "'VE", "https://", "<|im_end|>"]:
        assert piece in text, piece
    assert "<|im_start|>" in corpus and "x <|im_end|> y" in corpus  # alone and in context


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    from engine.tiny_models import cached_tiny_model

    base = cached_tiny_model("llama3")
    root = tmp_path_factory.mktemp("families")
    return {name: structured_model(name, base, root / name, rich=True)
            for name in {n for n, _ in WRONG}}


@pytest.mark.parametrize("family,wrong", WRONG)
def test_a_wrong_pre_tokenizer_type_fails_verification_naming_a_string(family, wrong,
                                                                        family_models, tmp_path):
    folder = family_models[family]
    right = export_gguf(folder, tmp_path / "right.gguf", "f32")
    assert right.metadata["pre_tokenizer"] == family
    check = {c["name"]: c for c in right.verification["checks"]}["llama.cpp tokenization"]
    assert check["passed"] and check["mismatch_rate"] == 0, check["detail"]

    forced = export_gguf(folder, tmp_path / "wrong.gguf", "f32", force_pre_tokenizer=wrong)
    assert forced.metadata["pre_tokenizer"] == wrong
    assert not forced.verification["passed"]
    check = {c["name"]: c for c in forced.verification["checks"]}["llama.cpp tokenization"]
    assert check["passed"] is False
    first = check["differing"][0]
    assert first["training"] != first["llama_cpp"]
    assert first["text"] in tokenizer_corpus(SPECIALS)  # a corpus string, named
    assert f"{first['text']!r}: training {first['training']}, llama.cpp {first['llama_cpp']}" \
        in check["detail"]
    assert forced.metadata["tokenizer_mismatch_rate"] == check["mismatch_rate"] > 0


def test_the_tokenization_check_is_fast_on_the_tiny_models(tiny_model, tmp_path):
    result = export_gguf(tiny_model("qwen2"), tmp_path / "q.gguf", "f32")
    check = {c["name"]: c for c in result.verification["checks"]}["llama.cpp tokenization"]
    assert check["passed"] and check["strings"] >= 300
    assert check["seconds"] < 2.0  # measured ~0.02 s: vocab-only load + a few hundred strings
