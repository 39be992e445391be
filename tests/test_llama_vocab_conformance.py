"""llama.cpp's own tokenizer tests, run on Tailor's exports (issue 12): for every vocabulary
family Tailor exports, a tiny model with that real vocabulary (rebuilt from llama.cpp's
``ggml-vocab-*.gguf``, see tests/llama_vocabs.py) is exported with ``export_gguf`` and llama.cpp
must give the expected ids (``.gguf.out``) for every test string (``.gguf.inp``). The rebuilt
Hugging Face side is checked the same way: the tokenizer Tailor loads from the folder must give
the expected ids itself, so the comparison is against the original tokenizers' output."""
from __future__ import annotations

import pytest

from tests.llama_vocabs import VOCAB_DIR, check_vocabulary, vocab_names, vocab_path

pytestmark = pytest.mark.skipif(
    not vocab_path("gpt-2").is_file(),
    reason=f"llama.cpp's test vocabularies are not in {VOCAB_DIR}: run `make setup` (it "
           "extracts them from the llama-cpp-python source distribution)")

# Refused today: Tailor's structural identification finds no llama.cpp type for Falcon's
# pre-tokenizer (Punctuation -> ByteLevel -> Digits -> Split). llama.cpp's own "falcon" file
# gives the same ids as the rebuilt Falcon tokenizer on all 47 strings and the whole built-in
# corpus, so accepting it would be right; until then the refusal must say why and offer the flag.
MAY_REFUSE = {"falcon"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("llama-vocabs")


@pytest.mark.parametrize("name", vocab_names())
def test_export_reproduces_llama_cpp_expected_ids(name, work):
    r = check_vocabulary(name, work)
    assert r.hf_strings_equal == r.strings, f"the rebuilt {name} tokenizer is not faithful"
    if r.refused:
        assert name in MAY_REFUSE, r.refused
        assert "llama.cpp has no pre-tokenizer that reproduces this one" in r.refused
        assert "--allow-tokenizer-mismatch" in r.refused
        return
    assert (r.strings_equal, r.ids_matched) == (r.strings, r.ids), (r.line(),
                                                                    r.first_difference)


def test_every_vocabulary_with_expected_ids_is_covered():
    from tests.llama_vocabs import skipped_vocabularies

    have = {p.name[len("ggml-vocab-"):-len(".gguf.out")] for p in VOCAB_DIR.glob("*.gguf.out")}
    assert have == set(vocab_names()) | set(skipped_vocabularies())
