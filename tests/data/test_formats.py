"""Every file format, encoding and schema reads into the same training examples."""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json

import pytest

from engine.data import DataConfig, prepare_dataset
from tests.conftest import snapshot_tree
from tests.data.conftest import chat, jsonl

PAIRS = [(f"What is {i} plus {i}?", f"It is {2 * i}.") for i in range(12)]


def token_set(prepared):
    return sorted(tuple(e.tokens) + (-1,) + tuple(e.loss_mask)
                  for e in prepared.train + prepared.valid + prepared.test)


def as_csv(rows: list[dict], delimiter: str) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


@pytest.fixture
def reference(write, tokenizer):
    rows = [{"prompt": p, "completion": c} for p, c in PAIRS]
    return token_set(prepare_dataset(write("ref.jsonl", jsonl(rows)), tokenizer()))


@pytest.mark.parametrize("name, make", [
    ("data.json", lambda rows: json.dumps(rows, indent=2)),
    ("holder.json", lambda rows: json.dumps({"version": 1, "data": rows}, indent=1)),
    ("lines.json", lambda rows: "\n".join(json.dumps(r) for r in rows)),
    ("data.ndjson", lambda rows: "\n".join(json.dumps(r) for r in rows)),
    ("data.csv", lambda rows: as_csv(rows, ",")),
    ("data.tsv", lambda rows: as_csv(rows, "\t")),
])
def test_every_file_format_gives_the_same_examples(write, tokenizer, reference, name, make):
    path = write(name, make([{"prompt": p, "completion": c} for p, c in PAIRS]))
    before = snapshot_tree(path.parent)
    prepared = prepare_dataset(path, tokenizer())
    assert token_set(prepared) == reference
    assert prepared.schema == "completion"
    assert prepared.report.errors == []
    assert snapshot_tree(path.parent) == before


@pytest.mark.parametrize("bom, codec", [(codecs.BOM_UTF8, "utf-8"),
                                        (codecs.BOM_UTF16_LE, "utf-16-le"),
                                        (codecs.BOM_UTF16_BE, "utf-16-be")])
@pytest.mark.parametrize("ext", ["jsonl", "csv", "json"])
def test_encodings_with_byte_order_mark(write, tokenizer, reference, bom, codec, ext):
    rows = [{"prompt": p, "completion": c} for p, c in PAIRS]
    text = {"jsonl": jsonl(rows).decode(), "csv": as_csv(rows, ","),
            "json": json.dumps(rows)}[ext]
    path = write(f"enc.{ext}", bom + text.encode(codec))
    prepared = prepare_dataset(path, tokenizer())
    assert token_set(prepared) == reference
    assert prepared.report.encoding == codec + "-bom"


def test_sha256_identifies_the_file_and_the_file_is_untouched(write, tokenizer):
    data = jsonl([chat(i) for i in range(10)])
    path = write("d.jsonl", data)
    prepared = prepare_dataset(path, tokenizer())
    assert prepared.sha256 == hashlib.sha256(data).hexdigest() == prepared.report.sha256
    assert path.read_bytes() == data


SCHEMA_ROWS = {
    "chat": lambda i: {"messages": [
        {"role": "system", "content": "Be short."},
        {"role": "user", "content": f"Say {i}."},
        {"role": "assistant", "content": f"{i}."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": f"{i} again."}]},
    "sharegpt": lambda i: {"conversations": [
        {"from": "system", "value": "Be short."}, {"from": "human", "value": f"Say {i}."},
        {"from": "gpt", "value": f"{i}."}, {"from": "human", "value": "Again?"},
        {"from": "gpt", "value": f"{i} again."}]},
    "alpaca": lambda i: {"instruction": f"Say {i}.", "input": "", "output": f"{i}."},
    "completion": lambda i: {"prompt": f"Say {i}.", "completion": f"{i}."},
    "question/answer": lambda i: {"question": f"Say {i}.", "answer": f"{i}."},
    "input/output": lambda i: {"input": f"Say {i}.", "output": f"{i}."},
    "text": lambda i: {"text": f"Number {i} is a fine number."},
}


@pytest.mark.parametrize("schema", list(SCHEMA_ROWS))
def test_every_schema_is_detected_and_rendered_with_the_chat_template(write, tokenizer, schema):
    tok = tokenizer("qwen2")
    rows = [SCHEMA_ROWS[schema](i) for i in range(10)]
    prepared = prepare_dataset(write("s.jsonl", jsonl(rows)), tok, DataConfig(valid_fraction=0))
    expected_schema = schema if "/" not in schema else "completion"
    assert prepared.schema == expected_schema
    assert len(prepared.train) == 10
    first = prepared.train[0]
    hf = tok._tokenizer
    if schema == "text":
        assert first.tokens == hf.encode(rows[0]["text"]) + [hf.eos_token_id]
        assert all(first.loss_mask)
        return
    if schema in ("chat", "sharegpt"):
        messages = SCHEMA_ROWS["chat"](0)["messages"]
    else:
        messages = [{"role": "user", "content": "Say 0."}, {"role": "assistant", "content": "0."}]
    # The rendering is exactly what transformers' apply_chat_template makes of the conversation.
    assert first.tokens == list(hf.apply_chat_template(messages, tokenize=True,
                                                       return_dict=False))
    assert 0 < sum(first.loss_mask) < len(first.tokens)


def test_alpaca_input_joins_the_instruction(write, tokenizer):
    rows = [{"instruction": "Translate.", "input": f"word {i}", "output": f"mot {i}"}
            for i in range(4)]
    prepared = prepare_dataset(write("a.jsonl", jsonl(rows)), tokenizer(),
                               DataConfig(preview_count=1, valid_fraction=0))
    assert "Translate.\n\nword 0" in prepared.report.preview[0].marked_text


def test_plain_text_blocks_are_examples_trained_on_every_token(write, tokenizer):
    text = "First block\nstill first.\n\nSecond block.\n\n\nThird block.\n"
    prepared = prepare_dataset(write("t.txt", text), tokenizer(), DataConfig(valid_fraction=0))
    assert prepared.schema == "text"
    assert [e.source for e in prepared.train] == ["t.txt:1", "t.txt:4", "t.txt:7"]
    assert all(all(e.loss_mask) for e in prepared.train)


def test_folder_with_train_valid_test_files_is_taken_as_given(write, tokenizer):
    train = write("folder/train.jsonl", jsonl([chat(i) for i in range(6)]))
    write("folder/valid.jsonl", jsonl([chat(100), chat(1, "A different answer.")]))
    write("folder/test.csv", "prompt,completion\nTest?,Yes.\nTest 2?,No.\n")
    with pytest.raises(Exception, match="one format"):
        # test.csv is completion, train is chat: one dataset, one format
        prepare_dataset(train.parent, tokenizer())
    (train.parent / "test.csv").unlink()
    write("folder/test.jsonl", jsonl([chat(200)]))
    before = snapshot_tree(train.parent)
    prepared = prepare_dataset(train.parent, tokenizer())
    assert (len(prepared.train), len(prepared.valid), len(prepared.test)) == (6, 2, 1)
    assert prepared.report.leakage == 1  # valid shares the prompt "Question number 1?"
    assert prepared.report.format == "folder"
    assert [e.source for e in prepared.valid] == ["valid.jsonl:1", "valid.jsonl:2"]
    assert snapshot_tree(train.parent) == before


def test_tools_reach_the_template(write, tokenizer):
    template = ("{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
                "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    rows = [{**chat(i), "tools": tools} for i in range(3)]
    prepared = prepare_dataset(write("tools.jsonl", jsonl(rows)), tokenizer(),
                               DataConfig(chat_template=template, preview_count=1))
    preview = prepared.report.preview[0]
    assert preview.marked_text.startswith('TOOLS:[{"type": "function"')
    assert [t for t, trained in preview.segments if trained] == ["Answer number 0.<|im_end|>"]


def test_content_parts_are_joined(write, tokenizer):
    rows = [{"messages": [{"role": "user", "content": [{"type": "text", "text": f"Hi {i}"}]},
                          {"role": "assistant", "content": "Hello."}]} for i in range(3)]
    prepared = prepare_dataset(write("parts.jsonl", jsonl(rows)), tokenizer(),
                               DataConfig(preview_count=1))
    assert "user\nHi 0<|im_end|>" in prepared.report.preview[0].marked_text
