"""The runner's lock and sweep tables (engine/cli.py job_locks, SWEEPING) cover the commands
added after them: eval holds its adapter's lock (a delete during an eval is refused as locked)
and a killed eval's temporary report in ``<adapter>/evaluations/`` is swept by the next
command; merge locks its parents and its new name and sweeps a killed merge's folder."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from engine import locks
from engine.atomic import temp_sibling
from engine.cli import main
from engine.evaluate.record import EVALUATIONS, new_report_id

from .conftest import REPO, snapshot_tree
from .export.adapters import make_library_adapter
from .train.conftest import write_toy_chat


def _killed_evals_temporary(folder, age: float = 0.0):
    """What a SIGKILLed `tailor eval` leaves: its report's temporary name, half written."""
    target = folder / EVALUATIONS / f"{new_report_id()}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    tmp.write_text('{"type": "eval", "scores": {"ad')
    if age:
        past = time.time() - age
        os.utime(tmp, (past, past))
    return tmp


def test_a_killed_evals_temporary_is_swept_by_the_next_eval_of_that_adapter(
        tiny_model, tmp_path, capsys):
    folder = make_library_adapter("pip", tiny_model("qwen2"))
    fresh = _killed_evals_temporary(folder)  # seconds old: only the adapter's lock tells
    rc = main(["eval", "--adapter", "pip", "--data", str(tmp_path / "none.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1  # (the missing data file; the sweep came first)
    assert not fresh.exists()
    assert f"removed 1 stale temporary file left by an interrupted job" in err and \
        str(fresh) in err


def test_an_old_killed_evals_temporary_is_swept_by_any_writing_command(tailor_home, capsys,
                                                                        tiny_model):
    folder = make_library_adapter("pip", tiny_model("qwen2"))
    make_library_adapter("other", tiny_model("qwen2"))
    old = _killed_evals_temporary(folder, age=2 * 3600)
    kept = folder / EVALUATIONS / "20261201-000000-abcdef.json"
    kept.write_text("{}")  # a kept report is never touched
    assert main(["library", "rename", "other", "another"]) == 0
    assert not old.exists() and kept.exists()


def test_a_delete_during_an_eval_is_refused_as_locked(tiny_model, tmp_path, tailor_home,
                                                       monkeypatch):
    from engine.cli import build_parser, run_command
    from engine.events import Finished, Job, Progress

    folder = make_library_adapter("pip", tiny_model("qwen2"))
    data = write_toy_chat(tmp_path / "held-out.jsonl", n=4)
    before = snapshot_tree(folder)
    argv = ["eval", "--adapter", "pip", "--data", str(data), "--no-probe", "--limit", "2",
            "--max-tokens", "8"]
    monkeypatch.setenv("TAILOR_FULL_HELP", "1")  # (every command's options in the parser)
    monkeypatch.setattr(locks, "CURRENT_COMMAND", "tailor " + " ".join(argv))
    args = build_parser().parse_args(argv)
    seen: list = []

    def report(event):  # mid-eval, at its first progress: another process tries to delete
        seen.append(event)
        if isinstance(event, Progress) and len([e for e in seen if isinstance(e, dict)]) == 0:
            p = subprocess.run([sys.executable, "-m", "engine", "library", "delete", "pip",
                                "--events", "-"], cwd=REPO, env=dict(os.environ),
                               capture_output=True, text=True, timeout=120)
            seen.append(json.loads([x for x in p.stdout.splitlines() if x.startswith("{")][-1]))

    assert run_command(args._module, args, Job(name="eval", report=report)) == 0
    refused = next(e for e in seen if isinstance(e, dict))
    assert refused["event"] == "failed" and refused["code"] == "locked", refused
    assert refused["message"].startswith("the adapter 'pip' is in use by another job: "
                                         "tailor eval --adapter pip")
    assert isinstance(seen[-1], Finished)
    after = snapshot_tree(folder)
    reports = [k for k in after if k.startswith(f"{EVALUATIONS}/")]
    assert len(reports) == 1  # the eval's report, and nothing else changed
    del after[reports[0]]
    assert after == before
    assert not locks.is_held(locks.adapter_lock_path("pip"))


def test_merge_locks_its_parents_and_new_name_and_the_domains_locks_count_as_its_own(
        tailor_home):
    from engine.cli import job_adapters, job_locks

    args = argparse.Namespace(command="merge", adapters=["a", "b", "a"], name="ab", fuse=None)
    assert job_adapters(args) == ["a", "b", "ab"]
    assert job_adapters(argparse.Namespace(command="merge", adapters=["a", "b"], name="ab",
                                           fuse="/tmp/x")) == ["a", "b"]  # (a folder, no name)
    for command in ("eval", "push", "export", "fuse", "ollama"):
        assert job_adapters(argparse.Namespace(command=command, adapter="x")) == ["x"]
    with job_locks(args, "merge"):
        for name in ("a", "b", "ab"):
            assert locks.is_held(locks.adapter_lock_path(name))
        with locks.holding(locks.adapter_lock("ab", "merge", reentrant=True)):
            pass  # the merge's own (re-entrant) hold inside the runner's is not refused
    assert not locks.is_held(locks.adapter_lock_path("ab"))
