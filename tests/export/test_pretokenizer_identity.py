"""The pre-tokenizer is identified from tokenizer.json's structure, not from a hash table
(issue 12: a hash not in the table used to fall back to a guess: "gpt-2" for any ByteLevel
with GPT-2's regex, "llama-bpe" by model type, wrong for StarCoder, Command-R and DeepSeek)."""
from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from engine.export.pretokenizers import (PRE_TYPES, PRE_TYPES_BY_NAME, canonical_regex,
                                         describe_tokenizer_json, identify_pre_tokenizer)
from engine.export.vocab import (KNOWN_PRE_HASHES, choose_pre_tokenizer, pre_tokenizer_hash,
                                 whole_word_differences)

from .pretok_models import LLAMA3_JSON, _byte_level, _split, structures, train_tokenizer


class _Hashable:
    """The training tokenizer as choose_pre_tokenizer reads it (encode for the hash)."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok

    def encode(self, text: str):
        return self.tok.encode(text, add_special_tokens=False).ids


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[dict, _Hashable]]:
    out = {}
    for name, s in structures().items():
        tok = train_tokenizer(s["pre"], normalizer=s.get("normalizer"),
                              ignore_merges=s.get("ignore_merges", False))
        out[name] = (json.loads(tok.to_str()), _Hashable(tok), s.get("clean"))
    return out


@pytest.mark.parametrize("name", ["gpt-2", "starcoder", "command-r", "llama-bpe", "qwen2",
                                  "deepseek-coder", "deepseek-llm", "deepseek-v3"])
def test_each_real_structure_names_its_llama_cpp_type_without_the_hash(name, trained):
    tok_json, hf, clean = trained[name]
    assert pre_tokenizer_hash(hf) not in KNOWN_PRE_HASHES  # a vocabulary no table knows
    chosen, source, record = choose_pre_tokenizer(
        hf, tok_json, {"clean_up_tokenization_spaces": clean}, corpus=[])
    assert chosen == name, record
    assert "tokenizer.json structure" in source and f"llama.cpp's {name}" in source
    assert record["hash_opinion"] is None
    assert record["opinions"] == "hash not in the table; structure alone"


def test_starcoder_and_command_r_differ_only_in_normalizer_and_detokenization(trained):
    """Same splits (digits one by one, then GPT-2's regex); Command-R's tokenizer.json adds
    NFC and does not clean up spaces, and llama.cpp's command-r type keeps spaces too."""
    sc = describe_tokenizer_json(trained["starcoder"][0])
    cr = describe_tokenizer_json(trained["command-r"][0],
                                 {"clean_up_tokenization_spaces": False})
    assert [s.regex for s in sc.steps] == [s.regex for s in cr.steps] == \
        list(PRE_TYPES_BY_NAME["starcoder"].regexes)
    found = identify_pre_tokenizer(cr)
    assert found.exact.name == "command-r"
    assert "NFC" in found.deviations[0]  # recorded: llama.cpp does not normalize


def test_a_hash_that_disagrees_is_recorded_and_the_structure_wins(trained):
    tok_json, hf, clean = trained["qwen2"]
    known = {pre_tokenizer_hash(hf): "gpt-2"}
    chosen, source, record = choose_pre_tokenizer(hf, tok_json, {}, known=known, corpus=[])
    assert chosen == "qwen2"
    assert record["hash_opinion"] == "gpt-2"
    assert record["opinions"].startswith("DISAGREE: the hash names 'gpt-2', the structure 'qwen2'")
    assert "disagrees, not used" in source


def test_a_hash_naming_an_equivalent_type_chooses_among_equals(trained):
    tok_json, hf, _ = trained["starcoder"]
    known = {pre_tokenizer_hash(hf): "smollm"}  # same splits as starcoder
    chosen, source, record = choose_pre_tokenizer(hf, tok_json, {}, known=known, corpus=[])
    assert chosen == "smollm" and record["opinions"] == "hash and structure agree"


def test_tiktoken_style_split_that_keeps_only_matches_is_llama3():
    """Converted tiktoken vocabularies write Split(Removed, invert=true): the same pieces as
    Isolated for a regex that matches everywhere."""
    tok = {"model": {"type": "BPE", "ignore_merges": True}, "pre_tokenizer": json.loads(
        pre_tokenizers.Sequence([_split(LLAMA3_JSON, "removed", True),
                                 _byte_level(False)]).__getstate__())}
    assert identify_pre_tokenizer(describe_tokenizer_json(tok)).exact.name == "llama-bpe"
    # ... but not for a regex with gaps (Digits-like), where the gaps would be dropped
    tok["pre_tokenizer"] = json.loads(pre_tokenizers.Sequence([
        _split(r"\p{N}", "removed", True), _byte_level(True)]).__getstate__())
    found = identify_pre_tokenizer(describe_tokenizer_json(tok))
    assert found.exact is None


def _bpe_json(vocab: dict[str, int], merges: list[tuple[str, str]], ignore_merges: bool) -> dict:
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([_split(LLAMA3_JSON), _byte_level(False)])
    return json.loads(tok.to_str())


def test_ignore_merges_decides_between_llama_bpe_and_dbrx_only_when_it_changes_ids():
    vocab = {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5}
    # "abc" is a vocabulary entry, but the merges (b c first) never build it: with
    # ignore_merges (llama-bpe) llama.cpp takes the word whole, the training tokenizer does not
    unreachable = _bpe_json(vocab, [("b", "c"), ("a", "b"), ("ab", "c")], ignore_merges=False)
    assert whole_word_differences(unreachable) == 1
    found = identify_pre_tokenizer(describe_tokenizer_json(unreachable),
                                   whole_word_differences=lambda: 1)
    assert found.exact.name == "dbrx"
    assert "llama-bpe" not in [t.name for t in found.candidates]
    # merges that rebuild every entry: the flag changes nothing, the canonical name is chosen
    reachable = _bpe_json(vocab, [("a", "b"), ("b", "c"), ("ab", "c")], ignore_merges=False)
    assert whole_word_differences(reachable) == 0
    found = identify_pre_tokenizer(describe_tokenizer_json(reachable),
                                   whole_word_differences=lambda: 0)
    assert found.exact.name == "llama-bpe"


def test_spellings_that_mean_the_same_regex_are_one():
    assert canonical_regex("[\r\n]") == canonical_regex(r"[\r\n]")
    assert canonical_regex(r'[!\"#]') == canonical_regex('[!"#]')
    assert canonical_regex(r"\\\"") != canonical_regex('\\"')  # an escaped backslash stays
    assert canonical_regex(r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])") == \
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"


def test_the_table_has_one_row_per_name_and_every_regex_compiles():
    from engine.export.pretokenizers import _hf_pre_tokenizer_for

    names = [t.name for t in PRE_TYPES]
    assert len(names) == len(set(names))
    for t in PRE_TYPES:
        _hf_pre_tokenizer_for(t)  # raises if the tokenizers engine cannot compile one


def test_the_table_says_which_hugging_face_structure_each_type_stands_for(trained):
    # the same words describe_tokenizer_json uses for a tokenizer.json of that structure
    for name in ("gpt-2", "starcoder"):
        assert PRE_TYPES_BY_NAME[name].hf_structure == \
            describe_tokenizer_json(trained[name][0]).describe()
    assert PRE_TYPES_BY_NAME["starcoder"].hf_structure == \
        "Digits(individual_digits=true) -> ByteLevel(use_regex=true); BPE ignore_merges=false"
    assert PRE_TYPES_BY_NAME["command-r"].hf_structure.startswith("normalizer NFC or none; ")
    assert PRE_TYPES_BY_NAME["llama-bpe"].hf_structure.endswith(
        "-> ByteLevel(use_regex=false); BPE ignore_merges=true")
