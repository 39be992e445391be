"""`--quiet` hides progress, never a failure (issue 11: a failing command with --quiet exited 1
with no output at all)."""
from __future__ import annotations

from engine.cli import main


def test_quiet_still_prints_the_failure(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    rc = main(["data", "check", str(missing), "--model", str(tmp_path / "no-model"), "--quiet"])
    out = capsys.readouterr()
    assert rc == 1
    assert "[data] FAILED:" in out.err and "no-model" in out.err
    assert "started" not in out.err  # the progress view stays off


def test_quiet_with_events_file_still_prints_the_failure(tmp_path, capsys):
    events = tmp_path / "events.jsonl"
    rc = main(["library", "show", "nothing-here", "--quiet", "--events", str(events)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "[library] FAILED: no adapter named 'nothing-here' in the library" in err
    assert '"event": "failed"' in events.read_text()


def test_quiet_prints_a_cancellation(monkeypatch, capsys):
    import sys
    import types

    from engine.cli import make_job, run_command
    from engine.events import Cancelled

    mod = types.ModuleType("fake_cancelled_job")

    def run(args, job):
        raise Cancelled("stop requested")

    mod.run = run
    monkeypatch.setitem(sys.modules, "fake_cancelled_job", mod)
    job, close = make_job("train", None, quiet=True)
    assert run_command("fake_cancelled_job", types.SimpleNamespace(), job) == 130
    assert capsys.readouterr().err == "[train] cancelled. stop requested\n"
