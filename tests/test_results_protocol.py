"""Typed results across the process boundary (issue 13): each command's result is a Result
dataclass that decode_event rebuilds as the same class; a failure carries an ErrorCode; the
version-1 dict form still decodes."""
from __future__ import annotations

import errno
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from engine import results
from engine.events import (SCHEMA_VERSION, Check, ErrorCode, Failed, Finished, Result,
                           TailorError, decode_event, result_class)

REPO = Path(__file__).resolve().parent.parent


def roundtrip(result: Result) -> Result:
    return decode_event(Finished(job="j", result=result).to_json()).result


@pytest.mark.parametrize("cls", [getattr(results, n) for n in results.__all__])
def test_every_result_class_is_registered_and_survives_the_wire(cls):
    assert result_class(cls.tag) is cls
    assert roundtrip(cls()) == cls()


def test_an_export_result_decodes_to_the_same_typed_object():
    r = results.ExportResult(path=Path("/x/a.gguf"), quant="q8_0", size_bytes=10,
                             kind="adapter", verification={"passed": False, "checks": [
                                 {"name": "loads", "passed": True, "detail": ""},
                                 {"name": "spaces", "passed": None, "detail": "recorded"}]})
    back = roundtrip(r)
    assert type(back) is results.ExportResult and back == r
    assert back.path == Path("/x/a.gguf") and back.adapter_only and not back.verified
    assert back.checks == [Check("loads", True, ""), Check("spaces", None, "recorded")]


def test_nested_results_and_lists_of_them_are_rebuilt():
    @dataclass
    class Checks(Result):
        tag: ClassVar[str] = "test.checks"
        first: Check | None = None
        all: list[Check] = field(default_factory=list)

    r = Checks(first=Check("a", None), all=[Check("b", True), Check("c", False, "x")])
    assert roundtrip(r) == r


def test_the_wire_is_versioned_and_the_version_1_dict_still_decodes():
    line = json.loads(Finished(job="train", result=results.TrainResult(adapter="a")).to_json())
    assert line["v"] == SCHEMA_VERSION == 2 and line["result"]["type"] == "train"
    old = decode_event('{"event": "finished", "v": 1, "job": "fuse", '
                       '"result": {"path": "/out"}}')
    assert old.result == {"path": "/out"}
    # a type this build does not know stays a dict, readable by coerce
    unknown = decode_event('{"event": "finished", "v": 2, "result": {"type": "later", "x": 1}}')
    assert unknown.result == {"type": "later", "x": 1}
    assert results.FuseResult.coerce({"path": "/out", "extra": 1}) == results.FuseResult("/out")
    # version 1 failures had no code: the class names the app used map to one
    v1 = decode_event('{"event": "failed", "v": 1, "message": "m", '
                      '"error_type": "OllamaNameTaken"}')
    assert v1.code == ErrorCode.NAME_TAKEN


def test_failures_carry_an_enumerated_code():
    from engine.atomic import write_fault
    from engine.locks import Busy
    from engine.ollama.client import OllamaNameTaken, OllamaUnreachable

    assert TailorError("x").code == ErrorCode.BAD_INPUT
    assert TailorError("x", code=ErrorCode.NAME_TAKEN).code == "name_taken"
    assert Busy("x").code == ErrorCode.LOCKED
    assert OllamaNameTaken("x").code == ErrorCode.NAME_TAKEN
    assert OllamaUnreachable("x").code == ErrorCode.NOT_RUNNING
    assert write_fault(OSError(errno.ENOSPC, "full"), "/tmp/x").code == ErrorCode.DISK_FULL
    assert write_fault(OSError(errno.EROFS, "ro"), "/tmp/x").code == ErrorCode.READ_ONLY
    assert write_fault(OSError(errno.EACCES, "no"), "/tmp/x").code == \
        ErrorCode.PERMISSION_DENIED
    from engine.models.resolve import _silent_hub

    assert _silent_hub("https://hub", "a/b", 3).code == ErrorCode.NETWORK
    line = Failed(job="j", message="m", code=ErrorCode.LOCKED).to_json()
    assert json.loads(line)["code"] == "locked"
    assert decode_event(line).code == ErrorCode.LOCKED


def test_a_command_sends_its_typed_result_and_its_failure_code(tmp_path):
    """Through a real worker process: `ollama status` with nothing listening decodes to an
    OllamaStatus; `fuse` of an adapter that does not exist fails with bad_input."""
    def events(*args):
        out = subprocess.run([sys.executable, "-m", "engine", *args, "--events", "-",
                              "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=120)
        return [decode_event(line) for line in out.stdout.splitlines()
                if line.startswith("{")]

    status = [e for e in events("ollama", "status", "--host", "http://127.0.0.1:9")
              if isinstance(e, Finished)][0].result
    assert isinstance(status, results.OllamaStatus) and status.reachable is False
    failed = [e for e in events("fuse", "--adapter", "nothing-here", "--out",
                                str(tmp_path / "f")) if isinstance(e, Failed)][0]
    assert failed.code == ErrorCode.BAD_INPUT and "nothing-here" in failed.message


def test_the_data_check_report_arrives_typed(tiny_model, tmp_path):
    """`tailor data check` sends its DataReport; the app gets problems, preview and token
    statistics as objects (issue 13), and the version-1 readers' keys are still there."""
    data = tmp_path / "d.jsonl"
    good = [json.dumps({"messages": [{"role": "user", "content": f"hi {i}"},
                                     {"role": "assistant", "content": f"hello {i}"}]})
            for i in range(6)]
    data.write_text("\n".join([*good, "{not json"]) + "\n")
    out = subprocess.run([sys.executable, "-m", "engine", "data", "check", str(data), "--model",
                          str(tiny_model("qwen2")), "--events", "-", "--quiet"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    events = [decode_event(line) for line in out.stdout.splitlines() if line.startswith("{")]
    report = [e for e in events if isinstance(e, Finished)][0].result
    assert isinstance(report, results.DataReport)
    assert report.good == 6 and report.skipped == 1
    assert isinstance(report.problems[0], results.Problem)
    assert report.problems[0].location == "d.jsonl:7:2" and len(report.errors) == 1
    assert isinstance(report.train_stats, results.TokenStats) and report.train_stats.tokens > 0
    assert report.preview and "⟦" in report.preview[0].marked_text
    assert report.to_dict()["errors"] == 1  # the wire form's computed count, for older readers


def test_library_and_model_info_results_arrive_typed(tiny_model):
    def finished(*args):
        out = subprocess.run([sys.executable, "-m", "engine", *args, "--events", "-", "--quiet"],
                             capture_output=True, text=True, cwd=REPO, timeout=120)
        return [e for e in (decode_event(line) for line in out.stdout.splitlines()
                            if line.startswith("{")) if isinstance(e, Finished)][0].result

    listed = finished("library", "list")
    assert isinstance(listed, results.LibraryList) and listed.adapters == []
    info = finished("model", "info", str(tiny_model("qwen2")))
    assert isinstance(info, results.ModelInfo)
    assert info.architecture == "qwen2" and info.gguf_export and info.parameters > 0


def test_no_command_sends_a_plain_dict_result():
    """Every Finished the engine builds carries a Result (a dict literal or dict() is how the
    guessed keys came back; issue 13)."""
    import ast

    engine = REPO / "engine"
    plain = []
    for path in sorted(engine.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finished":
                for kw in node.keywords:
                    if kw.arg == "result" and (isinstance(kw.value, ast.Dict) or (
                            isinstance(kw.value, ast.Call) and
                            getattr(kw.value.func, "attr", getattr(kw.value.func, "id", ""))
                            in ("dict", "to_dict"))):
                        plain.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not plain, plain


def test_one_job_state_vocabulary():
    from engine import library
    from engine.results import FINAL_STATES, RUN_STATUSES, JobState

    assert [s.value for s in FINAL_STATES] == ["finished", "failed", "cancelled", "crashed"]
    assert library.STATUSES == RUN_STATUSES
    assert json.dumps({"status": JobState.FINISHED}) == '{"status": "finished"}'
    assert JobState("interrupted") is JobState.INTERRUPTED
