"""Bad inputs: each gives a message naming the file and line, and never changes the file.

"problem" cases are skipped in lenient mode (the good examples are kept) and reported as
``file:line[:column]: reason``; "fatal" cases stop the import with a TailorError.
"""
from __future__ import annotations

import codecs
import json

import pytest

from engine.data import DataConfig, prepare_dataset
from engine.events import TailorError
from tests.conftest import snapshot_tree
from tests.data.conftest import chat, jsonl

GOOD = [json.dumps(chat(i)) for i in range(4)]


def lines(*bad: str) -> bytes:
    """Two good lines, the bad line(s) from line 3 on, two good lines."""
    return ("\n".join(GOOD[:2] + list(bad) + GOOD[2:]) + "\n").encode()


def msg(*messages) -> str:
    return json.dumps({"messages": list(messages)})


U = {"role": "user", "content": "Hi?"}
A = {"role": "assistant", "content": "Hello."}

CASES = [
    # (id, file name, bytes, expected message, "fatal" | "problem", config overrides)
    ("empty file", "e.jsonl", b"", "e.jsonl: the file is empty", "fatal", {}),
    ("only blank lines", "b.jsonl", b"\n\n  \n", "b.jsonl: no examples found", "fatal", {}),
    ("invalid JSON", "j.jsonl", lines('{"messages": [}'),
     "j.jsonl:3:15: invalid JSON: Expecting value", "problem", {}),
    ("JSON array where an object is expected", "arr.jsonl", lines('[{"role": "user"}]'),
     "arr.jsonl:3: expected a JSON object {...} per example, found an array", "problem", {}),
    ("NaN literal", "nan.jsonl", lines('{"messages": [], "score": NaN}'),
     "nan.jsonl:3:27: NaN is not valid JSON", "problem", {}),
    ("Infinity literal", "inf.jsonl", lines('{"text": Infinity}'),
     "inf.jsonl:3:10: Infinity is not valid JSON", "problem", {}),
    ("lone surrogate", "sur.jsonl",
     lines('{"messages": [{"role": "user", "content": "bad \\ud800 here"}, '
           '{"role": "assistant", "content": "ok"}]}'),
     "sur.jsonl:3: messages[0].content contains a lone surrogate (\\ud800)", "problem", {}),
    ("undecodable bytes", "lat.jsonl",
     lines("X").replace(b"\nX\n", b'\n{"text": "caf\xe9"}\n'),
     "lat.jsonl:3:14: bytes that are not valid UTF-8 (0xe9)", "problem", {}),
    ("missing field", "mf.jsonl", lines(msg({"role": "user"}, A)),
     "mf.jsonl:3: messages[0]: missing field 'content'", "problem", {}),
    ("mistyped field", "mt.jsonl", lines(msg({"role": "user", "content": 42}, A)),
     "mt.jsonl:3: messages[0].content must be a string, found a number", "problem", {}),
    ("messages not a list", "ml.jsonl", lines('{"messages": "hello"}'),
     "ml.jsonl:3: field 'messages' must be an array of messages, found a string", "problem", {}),
    ("empty content", "ec.jsonl", lines(msg(U, {"role": "assistant", "content": "  "})),
     "ec.jsonl:3: messages[1].content is empty", "problem", {}),
    ("unknown role", "ur.jsonl", lines(msg({"role": "bot", "content": "x"}, A)),
     "ur.jsonl:3: messages[0]: unknown role 'bot'", "problem", {}),
    ("no assistant turn", "na.jsonl", lines(msg(U)),
     "na.jsonl:3: no assistant message: nothing to train on", "problem", {}),
    ("image content part", "img.jsonl",
     lines(msg({"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}, A)),
     "img.jsonl:3: messages[0].content[0] is a image_url part; only text is supported",
     "problem", {}),
    ("no known fields", "nk.jsonl", lines('{"foo": 1, "bar": 2}'),
     "nk.jsonl:3: no known fields (found 'foo', 'bar'", "problem", {}),
    ("mixed schemas", "mix.jsonl", lines('{"text": "plain"}'),
     "mix.jsonl:3: this example is in the text format but the dataset is chat "
     "(from mix.jsonl:1)", "fatal", {}),
    ("roles the template refuses", "alt.jsonl",
     lines(msg(U, U, A)), "alt.jsonl:3: the model's chat template refused this conversation: "
     "Conversation roles must alternate", "problem", {"kind": "llama2"}),
    ("sharegpt unknown speaker", "sg.jsonl",
     b'{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}\n'
     b'{"conversations": [{"from": "robot", "value": "a"}, {"from": "gpt", "value": "b"}]}\n'
     b'{"conversations": [{"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]}\n',
     "sg.jsonl:2: conversations[0]: unknown role 'robot'", "problem", {}),
    ("alpaca without output", "al.jsonl",
     b'{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n'
     b'{"instruction": "d", "output": "e"}\n', "al.jsonl:2: missing field 'output'",
     "problem", {}),
    ("completion without its partner", "pc.jsonl",
     b'{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n{"prompt": "d", "completion": "e"}\n',
     "pc.jsonl:2: missing field 'completion' (found 'prompt')", "problem", {}),
    ("binary file renamed .jsonl", "bin.jsonl", bytes(range(256)) * 8,
     "bin.jsonl:1: this is not a text file", "fatal", {}),
    ("UTF-16 without BOM", "u16.jsonl", jsonl([chat(i) for i in range(3)]).decode().encode(
        "utf-16-le"), "u16.jsonl:1: this looks like UTF-16 text without a byte-order mark",
     "fatal", {}),
    ("UTF-32", "u32.jsonl", codecs.BOM_UTF32_LE + "{}".encode("utf-32-le"),
     "u32.jsonl:1: UTF-32 text is not supported", "fatal", {}),
    ("line over the length cap", "long.jsonl",
     lines(json.dumps({"text": "x" * (1 << 20)})),
     "long.jsonl:3: line longer than 1 MiB, skipped", "problem", {"max_line_mib": 1}),
    ("CSV with an embedded NUL", "nul.csv",
     b"prompt,completion\nA?,B.\nC?,D\x00E.\nF?,G.\nH?,I.\n",
     "nul.csv:3: field 2 ('completion') contains a NUL byte", "problem", {}),
    ("CSV without a header", "nh.csv", b"What?,That.\nWho?,Them.\n",
     "nh.csv:1: the first row is not a header", "fatal", {}),
    ("CSV row with too many fields", "wf.csv",
     b"prompt,completion\nA?,B.\nC?,D.,extra\nF?,G.\n",
     "wf.csv:3: row has 3 fields but the header has 2", "problem", {}),
    ("CSV with a multi-line field keeps line numbers", "ml.csv",
     b'prompt,completion\n"A\nsecond line?",B.\nC?,\nF?,G.\n',
     "ml.csv:4: field 'completion' is empty", "problem", {}),
    ("JSON array not closed", "open.json", b'[{"text": "a"},\n{"text": "b"}\n',
     "open.json:1: the JSON array that starts here is not closed (missing ']')", "fatal", {}),
    ("invalid element in a JSON array", "bad.json", b'[\n{"text": "a"},\n{"text": b}\n]',
     "bad.json:3:10: invalid JSON: Expecting value", "fatal", {}),
    ("JSON array element over the length cap", "big.json",
     ("[\n" + ",\n".join(GOOD[:2] + [json.dumps(chat(9, "x" * (1 << 20)))] + GOOD[2:])
      + "\n]\n").encode(), "big.json:4: example longer than 1 MiB, skipped", "problem",
     {"max_line_mib": 1}),
    ("data after the JSON array", "after.json",
     ("[" + ",".join(GOOD) + "]\n\n[" + GOOD[0] + "]").encode(),
     "after.json:3:1: unexpected '[' after the JSON array of examples (which ends on line 1)",
     "fatal", {}),
    ("JSON array cut short inside an example", "cut.json",
     ("[\n" + ",\n".join(GOOD) + ",\n" + GOOD[0][:45]).encode(),
     "cut.json:6:43: invalid JSON: Unterminated string starting at", "fatal", {}),
    ("JSON file holding a scalar", "num.json", b"42\n",
     "num.json:1: expected a JSON array of examples or an object holding one", "fatal", {}),
    ("unsupported file type", "data.parquet", b"PAR1",
     "data.parquet: unsupported file type '.parquet'", "fatal", {}),
    ("a single example cannot be split", "one.jsonl", jsonl([chat(1)]),
     "one.jsonl: only 1 usable example: need at least 2", "fatal", {}),
    ("fewer examples than one batch", "few.jsonl", jsonl([chat(i) for i in range(4)]),
     "few.jsonl: 3 training examples, fewer than one batch (8)", "fatal", {"min_examples": 8}),
    ("every example bad", "allbad.jsonl", b'{"messages": []}\n{"messages": []}\n',
     "allbad.jsonl:1: field 'messages' is empty", "fatal", {}),
    ("plain text with a NUL", "nul.txt", b"one block\n\ntwo\x00 block\n\nthree\n\nfour\n",
     "nul.txt:3:4: NUL byte in text", "problem", {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_file_and_line(write, tokenizer, case):
    _id, name, data, expected, kind, overrides = case
    overrides = dict(overrides)
    tok = tokenizer(overrides.pop("kind", "qwen2"))
    path = write(name, data)
    before = snapshot_tree(path.parent)
    config = DataConfig(**overrides)
    if kind == "fatal":
        with pytest.raises(TailorError) as err:
            prepare_dataset(path, tok, config)
        assert expected in str(err.value)
    else:
        prepared = prepare_dataset(path, tok, config)
        problems = [str(p) for p in prepared.report.errors]
        assert any(expected in p for p in problems), problems
        assert prepared.report.skipped == len(problems) >= 1
        assert len(prepared.train) + len(prepared.valid) >= 2  # the good examples are kept
        # Strict mode stops at the same problem.
        with pytest.raises(TailorError) as err:
            prepare_dataset(path, tok, DataConfig(**{**overrides, "strict": True}))
        assert expected in str(err.value)
    assert snapshot_tree(path.parent) == before, "the input was modified"


def test_a_directory_without_train_file(tmp_path, tokenizer):
    folder = tmp_path / "not-a-dataset"
    folder.mkdir()
    (folder / "notes.md").write_text("hello")
    before = snapshot_tree(folder)
    with pytest.raises(TailorError, match="not-a-dataset: this folder has no train file"):
        prepare_dataset(folder, tokenizer())
    assert snapshot_tree(folder) == before


def test_missing_file(tmp_path, tokenizer):
    with pytest.raises(TailorError, match="missing.jsonl: no such file or folder"):
        prepare_dataset(tmp_path / "missing.jsonl", tokenizer())


def test_blank_lines_and_bom_are_harmless(write, tokenizer):
    data = codecs.BOM_UTF8 + b"\n" + lines("", "   ", "\t") + b"\n\n"
    path = write("blank.jsonl", data)
    prepared = prepare_dataset(path, tokenizer())
    assert prepared.report.errors == []
    assert prepared.report.blank_lines == 6
    assert prepared.report.encoding == "utf-8-bom"
    assert len(prepared.train) + len(prepared.valid) == 4
    assert [e.source for e in prepared.train + prepared.valid][0] == "blank.jsonl:2"
    assert path.read_bytes() == data


def test_there_are_at_least_25_distinct_bad_inputs():
    assert len({c[0] for c in CASES}) + 4 >= 25  # + the four tests above
