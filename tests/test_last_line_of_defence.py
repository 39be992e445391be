"""engine/cli.py's run_command: an unexpected exception is one line plus a log file, and a
second Ctrl-C exits 130 without a KeyboardInterrupt traceback (issue 11)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

from engine.cli import make_job, run_command

REPO = Path(__file__).resolve().parent.parent


def _fake_module(monkeypatch, name, run):
    mod = types.ModuleType(name)
    mod.run = run
    monkeypatch.setitem(sys.modules, name, mod)
    return name


def test_an_unexpected_exception_is_one_line_and_its_traceback_goes_to_a_log(
        monkeypatch, capsys, tailor_home):
    def run(args, job):
        {}["missing"]  # a bug: KeyError

    name = _fake_module(monkeypatch, "fake_buggy_command", run)
    job, _ = make_job("fuse", None, False)
    assert run_command(name, types.SimpleNamespace(), job) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    first, hint = err.splitlines()
    assert first == "[fuse] FAILED: internal error: KeyError: 'missing'"
    logs = list((tailor_home / "logs").glob("internal-error-*.log"))
    assert len(logs) == 1
    assert hint == f"  hint: this is a bug in Tailor; please report it with the log {logs[0]}"
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "KeyError: 'missing'" in text
    assert "job: fuse" in text


def test_an_unexpected_exception_when_the_log_cannot_be_written(monkeypatch, capsys,
                                                                  tailor_home):
    (tailor_home / "logs").write_text("a file where the logs folder should be")

    def run(args, job):
        raise ValueError("bad value\nsecond line")

    name = _fake_module(monkeypatch, "fake_buggy_command2", run)
    job, _ = make_job("export", None, False)
    assert run_command(name, types.SimpleNamespace(), job) == 1
    err = capsys.readouterr().err
    assert err.startswith("[export] FAILED: internal error: ValueError: bad value\n")
    assert "the traceback could not be saved" in err and "Traceback" not in err


def test_an_unexpected_oserror_is_an_internal_error_too(monkeypatch, capsys):
    def run(args, job):
        raise ConnectionResetError(104, "Connection reset by peer")

    name = _fake_module(monkeypatch, "fake_buggy_command3", run)
    job, _ = make_job("ollama", None, False)
    assert run_command(name, types.SimpleNamespace(), job) == 1
    err = capsys.readouterr().err
    assert "internal error: ConnectionResetError: [Errno 104] Connection reset by peer" in err


SLEEPY = textwrap.dedent("""
    import sys, time, types
    import engine.cli as cli

    mod = types.ModuleType("sleepy_command")

    def run(args, job):
        print("running", flush=True)
        while True:        # ignores the polite stop, as a stalled network read would
            time.sleep(0.05)

    mod.run = run
    mod.configure = lambda p: None
    sys.modules["sleepy_command"] = mod
    cli.COMMANDS["sleepy"] = ("sleepy_command", "sleeps")
    sys.exit(cli.main(["sleepy"]))
""")


def test_a_second_ctrl_c_exits_130_without_a_traceback(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", SLEEPY], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TAILOR_HOME": str(tmp_path / "home")})
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "[sleepy] cancelled. interrupted (second Ctrl-C); stopped at once" in err
