"""`tailor data check FILE --model MODEL`: the report, --json, --preview, strict exit status."""
from __future__ import annotations

import json
import subprocess
import sys

from engine.cli import main
from engine.events import decode_event
from tests.conftest import REPO
from tests.data.conftest import chat, jsonl


def check(*args) -> int:
    return main(["data", "check", *map(str, args), "--quiet"])


def test_check_prints_the_report_with_preview(write, tiny_model, capsys):
    path = write("ok.jsonl", jsonl([chat(i) for i in range(10)]))
    assert check(path, "--model", tiny_model("qwen2"), "--preview", 1) == 0
    out = capsys.readouterr().out
    assert "Dataset ok.jsonl: jsonl, schema chat, encoding utf-8" in out
    assert "split: 9 train, 1 valid" in out
    assert "⟦Answer number 0.<|im_end|>⟧" in out


def test_strict_mode_exits_1_after_printing_every_problem(write, tiny_model, capsys):
    path = write("bad.jsonl", jsonl([chat(0), "{oops", chat(2), chat(3), {"messages": 5}]))
    before = path.read_bytes()
    assert check(path, "--model", tiny_model("qwen2")) == 0  # lenient: reported, not fatal
    assert "bad.jsonl:2:2: invalid JSON" in capsys.readouterr().out
    assert check(path, "--model", tiny_model("qwen2"), "--strict", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert [p["text"] for p in report["problems"]] == [
        "bad.jsonl:2:2: invalid JSON: Expecting property name enclosed in double quotes",
        "bad.jsonl:5: field 'messages' must be an array of messages, found a number"]
    assert report["errors"] == 2 and report["strict"] is True
    assert path.read_bytes() == before


def test_fatal_problem_exits_1_with_a_failed_event(write, tiny_model, tmp_path):
    path = write("empty.jsonl", b"")
    events = tmp_path / "events.jsonl"
    assert main(["data", "check", str(path), "--model", str(tiny_model("qwen2")), "--quiet",
                 "--events", str(events)]) == 1
    last = decode_event(events.read_text().splitlines()[-1])
    assert last.kind == "failed" and "empty.jsonl: the file is empty" in last.message


def test_event_stream_for_the_app(write, tiny_model):
    path = write("ok.jsonl", jsonl([chat(i) for i in range(10)]))
    proc = subprocess.run([sys.executable, "-m", "engine", "data", "check", str(path),
                           "--model", str(tiny_model("llama2")), "--events", "-", "--quiet",
                           "--preview", "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    events = [decode_event(line) for line in proc.stdout.splitlines()]
    assert events[0].kind == "started" and events[-1].kind == "finished"
    result = events[-1].result
    assert result.train_examples == 9 and len(result.preview) == 2
    assert result.preview[0].segments[-1] == [" Answer number 0. </s>", True]
