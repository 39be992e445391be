"""A JSON object that names a key twice is a problem at file:line:column with the key's name
(issue 11: it was accepted silently, the last value winning), in JSON Lines and in streamed
.json files, at any depth. Like any bad example it is skipped and reported (lenient) or stops
the import (strict)."""
from __future__ import annotations

import json

import pytest

from engine.data import DataConfig, prepare_dataset
from engine.data.json_stream import find_duplicate_key
from engine.data.readers import ProblemLog, read_json
from engine.events import TailorError
from tests.data.conftest import chat, jsonl

DUP_CONTENT = ('{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", '
               '"content": "first", "content": "second"}]}')
MESSAGE = "duplicate key {!r} in a JSON object (only the last value would be kept)"


def test_jsonl_duplicate_inside_a_message_is_skipped_and_reported(write, tokenizer):
    path = write("d.jsonl", jsonl([chat(0), chat(1), DUP_CONTENT, chat(3), chat(4)]))
    before = path.read_bytes()
    rep = prepare_dataset(path, tokenizer(), DataConfig()).report
    assert [str(p) for p in rep.errors] == [
        "d.jsonl:3:" + str(DUP_CONTENT.index('"content": "second"') + 1) + ": "
        + MESSAGE.format("content")]
    assert rep.good == 4 and rep.skipped == 1
    assert path.read_bytes() == before


def test_jsonl_duplicate_at_the_top_level(write, tokenizer):
    line = '{"prompt": "a", "completion": "b", "prompt": "c"}'
    path = write("t.jsonl", jsonl([{"prompt": f"p{i}", "completion": "x"} for i in range(3)]
                                  + [line]))
    rep = prepare_dataset(path, tokenizer(), DataConfig()).report
    assert [str(p) for p in rep.errors] == [f"t.jsonl:4:36: {MESSAGE.format('prompt')}"]


def test_strict_mode_stops_at_the_duplicate(write, tokenizer):
    path = write("d.jsonl", jsonl([chat(0), chat(1), DUP_CONTENT, chat(3)]))
    with pytest.raises(TailorError) as err:
        prepare_dataset(path, tokenizer(), DataConfig(strict=True))
    assert err.value.message.startswith("d.jsonl:3:")
    assert err.value.message.endswith(MESSAGE.format("content"))


def _pretty_array(rows) -> str:
    return "[\n" + ",\n".join(rows) + "\n]\n"


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_streamed_json_duplicate_is_reported_on_its_own_line(write, chunk):
    dup = ('{"messages": [\n  {"role": "user", "content": "Hi?"},\n  {"role": "assistant",\n'
           '   "content": "first",\n   "content": "second"}\n]}')
    path = write("d.json", _pretty_array([json.dumps(chat(0)), dup, json.dumps(chat(2))]))
    log = ProblemLog()
    records = list(read_json(path, "d.json", log, 1 << 20, chunk_bytes=chunk))
    assert [r.line for r in records] == [2, 9]
    # The second "content" of the example that starts on line 3 is on line 7, column 4.
    assert [str(p) for p in log.problems] == [f"d.json:7:4: {MESSAGE.format('content')}"]


def test_streamed_json_strict_and_lenient(write, tokenizer):
    rows = [json.dumps(chat(i)) for i in range(4)] + [DUP_CONTENT]
    path = write("d.json", _pretty_array(rows))
    rep = prepare_dataset(path, tokenizer(), DataConfig()).report
    assert [p.location for p in rep.errors] == ["d.json:6:" + str(
        DUP_CONTENT.index('"content": "second"') + 1)]
    assert rep.good == 4
    with pytest.raises(TailorError, match=r"^d\.json:6:\d+: duplicate key 'content'"):
        prepare_dataset(path, tokenizer(), DataConfig(strict=True))


@pytest.mark.parametrize("cap", [1 << 20, 40])
def test_examples_in_a_holder_object(write, cap):
    # The holder walk differs when the object is longer than one example (cap): same result.
    text = '{"data": [\n{"text": "a"},\n{"text": "b",\n "text": "c"},\n{"text": "d"}]}'
    log = ProblemLog()
    records = list(read_json(write("h.json", text), "h.json", log, cap))
    assert [r.value for r in records] == [{"text": "a"}, {"text": "d"}]
    assert [str(p) for p in log.problems] == [f"h.json:4:2: {MESSAGE.format('text')}"]


@pytest.mark.parametrize("cap", [1 << 20, 30])
def test_two_lists_of_examples_under_one_key_is_a_file_error(write, cap):
    text = '{"data": [{"text": "a"}],\n "data": [{"text": "b"}]}'
    with pytest.raises(TailorError, match=r"^h\.json:2(:2)?: duplicate key 'data'") as err:
        list(read_json(write("h.json", text), "h.json", ProblemLog(), cap))
    assert "name each key once" in err.value.hint


def test_one_example_object_with_a_duplicate(write, tokenizer):
    path = write("one.json", '{"text": "a",\n "text": "b"}')
    with pytest.raises(TailorError, match=r"^one\.json:2:2: duplicate key 'text'"):
        prepare_dataset(path, tokenizer(), DataConfig())


def test_finder_follows_nesting_and_strings():
    text = '{"a": {"k": 1}, "b": {"k": 2, "s": "\\"k\\": x", "k": 3}}'
    at, key, depth = find_duplicate_key(text)
    assert (key, depth) == ("k", 2) and text[at:].startswith('"k": 3')
    assert find_duplicate_key('[{"a": 1}, {"a": 2}]') is None
    assert find_duplicate_key('{"a": "a", "b": ["a", "a"]}') is None
