"""Domain functions vs the command runner (issue 13): a domain function takes one Job and
returns its typed result; only the command emits the job's Finished; work inside other work
(a nested Job) reports into its slice of the parent's bar and never a second Started."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.events import (Finished, Job, ListReporter, Log, Progress, Started, as_job,
                           decode_event)
from engine.results import ExportResult

REPO = Path(__file__).resolve().parent.parent


def test_a_nested_job_maps_its_progress_and_says_its_start_as_a_log_line():
    events = ListReporter()
    job = Job("ollama", events)
    inner = job.nested(0.0, 0.6)
    inner.started({"source": "x"})
    inner.progress("export")(1, 2, "half")
    inner.nested(0.5, 1.0).progress("verify")(1, 1)
    assert not events.of(Started)
    assert [e.done / e.total for e in events.of(Progress)] == [0.3, 0.6]
    assert all(e.job == "ollama" for e in events.events)
    assert "started" in events.of(Log)[0].message
    job.started({"a": 1}, {"b": 2})
    assert events.of(Started)[0].config == {"a": 1} and events.of(Started)[0].info == {"b": 2}
    assert inner.cancel is job.cancel
    assert as_job(job) is job and as_job("fuse").name == "fuse"


def test_export_gguf_returns_its_result_and_emits_no_finished(tiny_model, tmp_path):
    from engine.export.gguf_export import export_gguf

    top = ListReporter()
    result = export_gguf(tiny_model("qwen2"), tmp_path / "a.gguf", "f16", verify=False,
                         report=top)
    assert isinstance(result, ExportResult) and result.path.is_file()
    assert len(top.of(Started)) == 1 and not top.of(Finished)
    nested = ListReporter()
    export_gguf(tiny_model("qwen2"), tmp_path / "b.gguf", "f16", verify=False,
                job=Job("ollama", nested).nested(0.0, 0.6))
    assert not nested.of(Started) and not nested.of(Finished)
    assert max(e.done / e.total for e in nested.of(Progress)) <= 0.6


def test_the_export_command_finishes_once_with_the_typed_result(tiny_model, tmp_path):
    out = tmp_path / "c.gguf"
    r = subprocess.run([sys.executable, "-m", "engine", "export", "--model",
                        str(tiny_model("qwen2")), "--quant", "f16", "--out", str(out),
                        "--no-verify", "--events", "-", "--quiet"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    events = [decode_event(line) for line in r.stdout.splitlines() if line.startswith("{")]
    finished = [e for e in events if isinstance(e, Finished)]
    assert len(finished) == 1 and len([e for e in events if isinstance(e, Started)]) == 1
    result = finished[0].result
    assert isinstance(result, ExportResult)
    assert result.path == out and result.size_bytes == out.stat().st_size
    assert result.tensors == [] and result.tensor_count > 0  # the list stays in the record
