""".json files are streamed: memory is bounded by the largest example, not the file, and the
examples, problems and errors (with file:line:column) are the same for every chunk size as
when the whole file is read in one piece."""
from __future__ import annotations

import codecs
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.data import DataConfig, prepare_dataset
from engine.data.readers import ProblemLog, read_json
from engine.events import TailorError
from tests.conftest import snapshot_tree
from tests.data.conftest import chat

WHOLE = 1 << 30  # a chunk larger than any test file: the whole-file parse


def outcome(path, chunk_bytes: int, cap: int = 1 << 20, strict: bool = False):
    """Everything a reader run shows: records, problems, the error, notes, largest buffer."""
    log, meta, records, error = ProblemLog(strict), {}, [], None
    try:
        for rec in read_json(path, path.name, log, cap, meta=meta, chunk_bytes=chunk_bytes):
            records.append((rec.line, rec.value))
    except TailorError as e:
        error = str(e)
    return {"records": records, "problems": [str(p) for p in log.problems], "error": error,
            "note": meta.get("note"), "encoding": meta.get("encoding")}, meta


def put(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def example(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Question {i}: caf\u00e9 \U0001f600?"},
                         {"role": "assistant", "content": f"Answer {i}, with \"quotes\" \\."}]}


@pytest.mark.parametrize("holder", [False, True])
def test_memory_is_bounded_by_the_largest_example_not_the_file(tmp_path, holder):
    rows = [example(i) for i in range(3000)]
    text = json.dumps({"version": 1, "data": rows} if holder else rows, indent=1)
    path = put(tmp_path, "big.json", text.encode())
    longest = max(len(json.dumps(r, indent=2)) for r in rows)  # with the holder's indent
    chunk, cap = 256, 2 * longest
    # The cap is far below the file size: a holder object is walked, never held whole.
    result, meta = outcome(path, chunk, cap=cap)
    assert result["error"] is None and result["problems"] == []
    assert [v for _line, v in result["records"]] == rows
    assert len(text) > 500 * (cap + chunk)
    assert meta["largest_buffer"] <= cap + 2 * chunk, meta["largest_buffer"]
    if not holder:  # no more than one example and a chunk or two
        assert meta["largest_buffer"] <= longest + 2 * chunk, meta["largest_buffer"]
    assert result["note"] == ("examples read from the list under the key 'data'"
                              if holder else None)
    # Line numbers are those of each example's first character in the file.
    lines = text.split("\n")
    for line, value in result["records"][::500]:
        assert lines[line - 1].strip() == "{"
        assert json.dumps(value, indent=1).split("\n")[1].strip() in lines[line]


DOC = ("[\n  " + ",\n  ".join([
    json.dumps(example(1)),
    json.dumps(example(2), ensure_ascii=False),
    '{"text": "escapes \\\\ \\" \\/ \\u00e9 \\ud83d\\ude00 \\n"}',
    '{"text": "lone \\ud800 surrogate"}',
    '12345.5e-3', 'true', 'null', '[1, [2, [3, {"a": []}]]]',
    '{"text": "x"}']) + "\n]\n")
BAD_DOCS = {
    "nan": DOC.replace('true', '{"text": NaN}'),
    "invalid": DOC.replace('null', '{"text": nul}'),
    "unclosed": DOC[:-3],
    "cut": DOC[:DOC.index("lone") + 2],
    "trailing": DOC + "  {}",
    "missing comma": DOC.replace("true,", "true"),
    "holder": json.dumps({"name": "x", "data": [example(1), {"text": "y"}],
                          "more": [{"a": 1}]}, indent=2),
    "single": json.dumps(example(3), indent=2),
    "lines": json.dumps(example(4)) + "\n" + json.dumps(example(5)) + "\n",
}


@pytest.mark.parametrize("bom, codec", [(b"", "utf-8"), (codecs.BOM_UTF8, "utf-8"),
                                        (codecs.BOM_UTF16_LE, "utf-16-le"),
                                        (codecs.BOM_UTF16_BE, "utf-16-be")])
@pytest.mark.parametrize("name", ["good", *BAD_DOCS])
def test_every_chunk_boundary_gives_the_whole_file_result(tmp_path, name, bom, codec):
    text = DOC if name == "good" else BAD_DOCS[name]
    data = bom + text.encode(codec, "surrogatepass")
    path = put(tmp_path, "split.json", data)
    whole, _ = outcome(path, WHOLE)
    if name == "good":
        assert [v for _line, v in whole["records"]] == json.loads(text)
        assert [line for line, _v in whole["records"]] == [2, 3, 4, 5, 6, 7, 8, 9, 10]
    for chunk in range(1, len(data) + 2):  # every position is the end of a first chunk
        assert outcome(path, chunk)[0] == whole, chunk
    assert path.read_bytes() == data


def test_what_the_whole_file_parse_reports(tmp_path):
    """The messages the chunk-boundary test holds every chunk size to."""
    def error(name):
        return outcome(put(tmp_path, f"{name}.json".replace(" ", "_"),
                             BAD_DOCS[name].encode()), WHOLE)[0]["error"]

    assert error("nan") == "nan.json:7: NaN is not valid JSON (use null or a number)"
    assert error("invalid") == "invalid.json:8:12: invalid JSON: Expecting value"
    assert error("unclosed").startswith("unclosed.json:1: the JSON array that starts here "
                                        "is not closed")
    assert error("cut").startswith("cut.json:5:12: invalid JSON: Unterminated string")
    assert error("trailing").startswith("trailing.json:12:3: unexpected '{' after the JSON "
                                        "array of examples (which ends on line 11)")
    assert error("missing comma") == ("missing_comma.json:8:3: expected ',' or ']' between "
                                      "examples, found 'n'")
    holder = outcome(put(tmp_path, "h.json", BAD_DOCS["holder"].encode()), WHOLE)[0]
    assert holder["note"] == "examples read from the list under the key 'data'"
    assert holder["records"] == [(4, example(1)), (16, {"text": "y"})]
    single = outcome(put(tmp_path, "s.json", BAD_DOCS["single"].encode()), WHOLE)[0]
    assert single["records"] == [(1, example(3))]
    lines = outcome(put(tmp_path, "l.json", BAD_DOCS["lines"].encode()), WHOLE)[0]
    assert lines["records"] == [(1, example(4)), (2, example(5))]
    assert "read as JSON Lines" in lines["note"]


@pytest.mark.parametrize("chunk", [1, 7, 64, WHOLE])
def test_an_example_over_the_cap_is_skipped_and_reported(tmp_path, chunk):
    rows = [{"text": "short"}, {"text": "x" * 500}, {"text": "y"}, {"text": "z" * 200}]
    path = put(tmp_path, "cap.json", json.dumps(rows, indent=0).encode())
    result, meta = outcome(path, chunk, cap=100)
    assert [line for line, _ in result["records"]] == [2, 8]
    assert result["problems"] == ["cap.json:5: example longer than 100 characters, skipped",
                                  "cap.json:11: example longer than 100 characters, skipped"]
    assert meta["largest_buffer"] <= 100 + 2 * chunk or chunk == WHOLE
    # Strict mode stops at the first one; an over-long example left open is a clear error.
    assert outcome(path, chunk, cap=100, strict=True)[0]["error"].startswith(
        "cap.json:5: example longer than 100 characters, skipped")
    cut = put(tmp_path, "open.json", json.dumps(rows).encode()[:300])
    assert outcome(cut, chunk, cap=100)[0]["error"] == (
        "open.json:1: the example that starts here is longer than 100 characters and not "
        "closed before the end of the file")


def test_a_big_holder_object_without_a_list_is_refused(tmp_path):
    path = put(tmp_path, "obj.json", json.dumps({"a": "x" * 300, "b": [1, 2]}).encode())
    result, _ = outcome(path, 16, cap=100)
    assert result["error"].startswith("obj.json:1: this JSON object is longer than 100 characters "
                                      "and holds no list of examples")


def test_undecodable_bytes_name_their_line_at_any_chunk_size(tmp_path):
    data = b'[\n{"text": "a"},\n{"text": "caf\xe9"}\n]'
    path = put(tmp_path, "lat.json", data)
    for chunk in (1, 2, 5, WHOLE):
        assert outcome(path, chunk)[0]["error"].startswith(
            "lat.json:3: bytes that are not valid UTF-8 (0xe9)")


def test_a_streamed_json_array_imports_like_json_lines(write, tokenizer):
    rows = [chat(i) for i in range(40)]
    jsonl = write("d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    array = write("d.json", "[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    before = snapshot_tree(array.parent)
    a = prepare_dataset(jsonl, tokenizer(), DataConfig())
    b = prepare_dataset(array, tokenizer(), DataConfig())
    for part in ("train", "valid"):
        mine, theirs = getattr(a, part), getattr(b, part)
        assert [e.tokens for e in mine] == [e.tokens for e in theirs]
        assert [int(e.source.split(":")[1]) + 1 for e in mine] == \
            [int(e.source.split(":")[1]) for e in theirs]  # line 1 of the .json is '['
    assert snapshot_tree(array.parent) == before


# Random documents: arrays or holders of random values, any whitespace and escaping, any
# encoding, then maybe damaged (cut, a byte inserted, data appended).
_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["text", "messages", "role", "content", "data", "x"]),
                      inner, max_size=3), max_leaves=10)


@st.composite
def documents(draw) -> bytes:
    rows = draw(st.lists(_VALUE, max_size=6))
    kwargs = {"indent": draw(st.sampled_from([None, 0, 1, 2])),
              "ensure_ascii": draw(st.booleans())}
    doc = draw(st.sampled_from(["array", "holder", "object"]))
    value = {"array": rows, "holder": {"v": 1, "data": rows},
             "object": {"text": draw(st.text(max_size=20))}}[doc]
    text = json.dumps(value, **kwargs)
    codec, bom = draw(st.sampled_from([("utf-8", b""), ("utf-8", codecs.BOM_UTF8),
                                       ("utf-16-le", codecs.BOM_UTF16_LE),
                                       ("utf-16-be", codecs.BOM_UTF16_BE)]))
    data = text.encode(codec)
    damage = draw(st.sampled_from(["none", "cut", "insert", "append"]))
    if damage != "none" and data:
        at = draw(st.integers(0, len(data)))
        if damage == "cut":
            data = data[:at]
        elif damage == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=2)) + data[at:]
        else:
            data += draw(st.binary(max_size=6))
    return bom + data


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=documents(), chunk=st.integers(1, 48), cap=st.sampled_from([1 << 20, 24]),
       strict=st.booleans())
def test_any_chunk_size_gives_the_whole_file_result(tmp_path, data, chunk, cap, strict):
    path = put(tmp_path, "h.json", data)
    whole, _ = outcome(path, WHOLE, cap, strict)
    assert outcome(path, chunk, cap, strict)[0] == whole
    assert outcome(path, 1, cap, strict)[0] == whole
    if whole["error"] is None and not whole["problems"] and whole["note"] is None:
        # An independent oracle: the standard library on the whole text.
        text = data.decode("utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig")
        parsed = json.loads(text)
        assert [v for _line, v in whole["records"]] == (
            parsed if isinstance(parsed, list) else [parsed])
