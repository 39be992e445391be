"""Per-host progress in a distributed run's log: rank 0 alone writes events; the other ranks'
one-line news (joined, finished, failed) comes through mlx.launch's stderr and the launcher
turns it, and rank 0's Started and Step events, into log lines naming each rank's host."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from engine.events import Failed, Job, Log, Started, Step
from engine.train import launch
from engine.train.hosts import Host

HOSTS = [Host("mac1", ["10.0.0.1"]), Host("mac2", ["10.0.0.2"])]


def logs(events) -> list[str]:
    return [e.message for e in events if isinstance(e, Log)]


def test_rank_lines_become_log_lines_naming_the_host(capsys):
    events = []
    news = launch._RankNews(HOSTS, Job("train", report=events.append))
    launch._rank_says(1, "joined on mac2.local")          # what a rank writes ...
    launch._rank_reporter(1)(Failed(job="train", message="out of memory", hint="smaller batch"))
    written = capsys.readouterr().err.splitlines()
    assert written == ["[rank 1] joined on mac2.local",
                       "[rank 1] FAILED: out of memory (smaller batch)"]
    for line in written:                                  # ... and what the launcher makes of it
        assert news.rank_line(line + "\n")
    assert not news.rank_line("[ring] connection lost\n") and not news.rank_line("hello\n")
    assert logs(events) == ["rank 1 on mac2: joined on mac2.local",
                            "rank 1 on mac2: FAILED: out of memory (smaller batch)"]
    assert [e.level for e in events] == ["info", "warning"]


def test_rank0s_events_say_where_each_rank_runs_and_the_step_all_have_reached():
    events = []
    news = launch._RankNews(HOSTS, Job("train", report=events.append))
    news.event(Started(job="train", info={"distributed": {"ranks": 2, "hosts": [
        "mac1.local", "mac2.local"]}}))
    for i in range(1, 21):
        news.event(Step(job="train", iteration=i, total_iterations=20))
    assert len([e for e in events if isinstance(e, Step)]) == 20  # every event relayed
    lines = logs(events)
    assert lines[0] == "ranks: 0 on mac1 (mac1.local), 1 on mac2 (mac2.local)"
    steps = [m for m in lines if m.startswith("step ")]
    assert steps[0] == "step 1/20 done on every rank: 0 on mac1, 1 on mac2"
    assert [m.split()[1] for m in steps] == ["1/20", "3/20", "5/20", "7/20", "9/20", "11/20",
                                             "13/20", "15/20", "17/20", "19/20"]


@pytest.mark.slow
def test_a_two_rank_run_logs_each_ranks_host_joining_and_finishing(tmp_path, tiny_model):
    """2 local ranks for real (mlx.launch, ring on 127.0.0.1): the launcher's event stream has
    rank 1's joined and finished lines and the step lines, and only rank 0's Step events."""
    from tests.train.conftest import events_of, run_tailor, write_toy_chat

    data = write_toy_chat(tmp_path / "toy.jsonl", n=16)
    done = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(data),
                      "--name", "news", "--iters", "4", "--batch-size", "2", "--rank", "4",
                      "--eval-every", "0", "--save-every", "4", "--baseline-prompts", "0",
                      "--ranks", "2", "--quiet", "--events", "-", timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    events = events_of(done.stdout)
    messages = [e["message"] for e in events if e["event"] == "log"]
    node = os.uname().nodename
    assert f"rank 1 on 127.0.0.1: joined on {node}" in messages
    assert any(m.startswith(f"rank 1 on 127.0.0.1: finished on {node} after ") for m in messages)
    assert f"ranks: 0 on 127.0.0.1 ({node}), 1 on 127.0.0.1 ({node})" in messages
    assert "step 1/4 done on every rank: 0 on 127.0.0.1, 1 on 127.0.0.1" in messages
    assert [e["iteration"] for e in events if e["event"] == "step"] == [1, 2, 3, 4]


class _Launched:
    """mlx.launch as _relay sees it: its stdout and stderr lines, then an exit status."""

    def __init__(self, stdout: list[str], stderr: list[str]):
        self.stdout, self.stderr, self.returncode = iter(stdout), iter(stderr), 0
        self.stdin = self

    def write(self, text):  # (stdin: the forwarded stop)
        pass

    def flush(self):
        pass

    def wait(self):
        return 0


def test_a_remote_ranks_lines_arrive_on_stdout_through_ssh_tt():
    """Found on a real two-host run over ssh: mlx.launch runs remote ranks under `ssh -tt`,
    whose terminal merges the rank's stderr into stdout (with CRLF endings)."""
    events = []
    finished = json.dumps({"event": "finished", "v": 2, "job": "train", "result": {}})
    proc = _Launched(stdout=["[rank 1] joined on mac2.local\r\n", finished + "\r\n"],
                     stderr=["[rank 1] finished on mac2.local after 9 s\n"])
    assert launch._relay(proc, HOSTS, Job("train", report=events.append), "n") == 0
    assert "rank 1 on mac2: joined on mac2.local" in logs(events)  # (the streams are read
    assert "rank 1 on mac2: finished on mac2.local after 9 s" in logs(events)  # by 2 threads)


def test_a_rank_under_ssh_tt_hears_the_launchers_stop_on_its_terminal():
    """mlx.launch forwards the launcher's `stop` to every rank's stdin; a remote rank's stdin
    is the terminal `ssh -tt` gives it, which the runner does not watch (found on a real run
    over ssh: a stop never reached the ranks and the run trained on to the end)."""
    import pty
    import time

    from engine.events import CancelToken

    controller, terminal = pty.openpty()
    with open(terminal, "r", closefd=True) as stdin:
        assert stdin.isatty()
        cancel = CancelToken()
        launch.watch_launcher_stop(cancel, stdin)
        os.write(controller, b"stop\n")
        deadline = time.monotonic() + 10
        while not cancel.requested and time.monotonic() < deadline:
            time.sleep(0.02)
        assert cancel.requested
    os.close(controller)
