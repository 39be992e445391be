"""llama.cpp's own tokenizer tests, run on Tailor's exports (issue 12): for every vocabulary
family Tailor exports, a tiny model with that real vocabulary (rebuilt from llama.cpp's
``ggml-vocab-*.gguf``, see tests/llama_vocabs.py) is exported with ``export_gguf`` and llama.cpp
must give the expected ids (``.gguf.out``) for every test string (``.gguf.inp``). The rebuilt
Hugging Face side is checked the same way: the tokenizer Tailor loads from the folder must give
the expected ids itself, so the comparison is against the original tokenizers' output."""
from __future__ import annotations

import pytest

from engine.events import TailorError
from tests.llama_vocabs import VOCAB_DIR, check_vocabulary, vocab_names, vocab_path

pytestmark = pytest.mark.skipif(
    not vocab_path("gpt-2").is_file(),
    reason=f"llama.cpp's test vocabularies are not in {VOCAB_DIR}: run `make setup` (it "
           "extracts them from the llama-cpp-python source distribution)")

# Refused on purpose: llama.cpp's type for it splits text differently from the model's own
# tokenizer.json (Falcon's pre-tokenizer maps bytes before its Digits and Split steps).
REFUSED = {"falcon": "llama.cpp has no pre-tokenizer that reproduces this one"}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("llama-vocabs")


@pytest.mark.parametrize("name", vocab_names())
def test_export_reproduces_llama_cpp_expected_ids(name, work):
    if name in REFUSED:
        with pytest.raises(TailorError) as e:
            check_vocabulary(name, work)
        assert REFUSED[name] in e.value.message
        assert "--allow-tokenizer-mismatch" in e.value.hint
        return
    r = check_vocabulary(name, work)
    assert r.hf_strings_equal == r.strings, f"the rebuilt {name} tokenizer is not faithful"
    assert (r.strings_equal, r.ids_matched) == (r.strings, r.ids), (r.line(),
                                                                    r.first_difference)


def test_every_vocabulary_with_expected_ids_is_covered():
    from tests.llama_vocabs import skipped_vocabularies

    have = {p.name[len("ggml-vocab-"):-len(".gguf.out")] for p in VOCAB_DIR.glob("*.gguf.out")}
    assert have == set(vocab_names()) | set(skipped_vocabularies())
