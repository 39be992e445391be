"""The worker core: line buffer, command lines, the QProcess worker and the job queue."""
from __future__ import annotations

import json
import random
import sys

import pytest

from app.commands import dataclass_flags, engine_argv, train_command
from app.linebuffer import LineBuffer


def test_line_buffer_never_loses_a_record_split_across_reads():
    records = [{"event": "step", "iteration": i, "text": "naïve ünïcødé ✓ 🚀" * (i % 5)}
               for i in range(300)]
    stream = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode() for r in records)
    for seed in range(20):
        rng = random.Random(seed)
        buf, lines, pos = LineBuffer(), [], 0
        while pos < len(stream):
            n = rng.choice([1, 2, 3, 7, 64, 1000])  # cuts inside multi-byte characters too
            lines += buf.feed(stream[pos:pos + n])
            pos += n
        assert buf.flush() == []
        assert [json.loads(l) for l in lines] == records


def test_line_buffer_hands_back_an_unterminated_last_line_at_the_end():
    buf = LineBuffer()
    assert buf.feed(b'{"a": 1}\r\n{"b"') == ['{"a": 1}']
    assert buf.pending == 4
    assert buf.flush() == ['{"b"']


def test_train_command_lists_only_what_differs_from_the_engine_defaults():
    from dataclasses import dataclass
    from engine.configs import opt

    @dataclass
    class Cfg:
        rank: int = opt(16, "rank")
        learning_rate: float = opt(1e-4, "lr")
        grad_checkpoint: bool = opt(False, "ckpt")
        rslora: bool = opt(True, "rs")
        targets: str = opt("all-linear", "targets")

    argv = train_command("/m", "/d.jsonl", "my-style",
                         {"rank": 8, "learning_rate": 2e-4, "grad_checkpoint": True,
                          "rslora": False, "targets": "all-linear"},
                         config_cls=Cfg, python="py")
    assert argv == ["py", "-m", "engine", "train", "--model", "/m", "--data", "/d.jsonl",
                    "--name", "my-style", "--rank", "8", "--learning-rate", "0.0002",
                    "--grad-checkpoint", "--no-rslora", "--events", "-", "--quiet"]
    assert engine_argv("export", "--adapter", "a", python="py") == [
        "py", "-m", "engine", "export", "--adapter", "a", "--events", "-", "--quiet"]


def test_train_command_flags_are_the_ones_tailor_train_accepts():
    """Every flag the app can send is one the engine's own parser defines."""
    import argparse

    from engine.configs import add_dataclass_args
    from engine.train.config import TrainConfig

    parser = argparse.ArgumentParser()
    add_dataclass_args(parser, TrainConfig)
    cfg = TrainConfig(rank=4, alpha=8.0, grad_checkpoint=True, learning_rate=3e-4, iters=7,
                      targets="attention", quantize_base=4)
    flags = dataclass_flags(TrainConfig, cfg.to_dict())
    ns = parser.parse_args(flags)
    assert (ns.rank, ns.alpha, ns.grad_checkpoint, ns.learning_rate, ns.iters, ns.targets,
            ns.quantize_base) == (4, 8.0, True, 3e-4, 7, "attention", 4)


# -- the worker -------------------------------------------------------------------------------

pytestmark = pytest.mark.gui


def _record(worker):
    seen = {k: [] for k in ("started", "stepped", "validated", "checkpointed", "finished",
                            "failed", "cancelled", "crashed", "ended", "logged")}
    for k in seen:
        getattr(worker, k).connect(lambda *a, k=k: seen[k].append(a if len(a) > 1 else a[0]))
    return seen


def test_worker_decodes_a_stream_written_in_tiny_chunks(qtbot, fake_argv):
    from app.worker import EngineWorker

    w = EngineWorker(fake_argv("--steps", "120", "--chunk", "5"))
    seen = _record(w)
    with qtbot.waitSignal(w.ended, timeout=30000):
        w.start()
    assert seen["ended"] == ["finished"]
    assert [e.iteration for e in seen["stepped"]] == list(range(1, 121))
    assert [e.iteration for e in seen["validated"]] == [50, 100]
    assert seen["finished"][0].result == {"adapter": "fake"}
    assert len(seen["started"]) == 1


def test_stop_is_asked_politely_and_ends_cancelled_with_the_checkpoint(qtbot, fake_argv):
    from app.worker import EngineWorker

    w = EngineWorker(fake_argv("--steps", "3", "--then", "wait-stop"))
    seen = _record(w)
    w.start()
    qtbot.waitUntil(lambda: len(seen["checkpointed"]) == 1, timeout=30000)
    with qtbot.waitSignal(w.ended, timeout=30000):
        w.stop()
    assert seen["ended"] == ["cancelled"]
    assert seen["cancelled"][0].checkpoint == "/tmp/ckpt"
    assert w.exit_code == 130


def test_a_worker_that_ignores_stop_is_terminated(qtbot, fake_argv):
    from app.worker import EngineWorker

    w = EngineWorker(fake_argv("--steps", "2", "--then", "ignore-stop"), stop_grace_ms=300,
                     terminate_grace_ms=300)
    seen = _record(w)
    w.start()
    qtbot.waitUntil(lambda: len(seen["stepped"]) == 2, timeout=30000)
    with qtbot.waitSignal(w.ended, timeout=30000):
        w.stop()
    assert seen["ended"] == ["cancelled"]
    assert "terminated" in seen["cancelled"][0].message


def test_a_killed_worker_becomes_a_crash_with_a_suggestion(qtbot, fake_argv):
    from app.worker import EngineWorker

    w = EngineWorker(fake_argv("--steps", "4", "--then", "die"))
    seen = _record(w)
    with qtbot.waitSignal(w.ended, timeout=30000):
        w.start()
    assert seen["ended"] == ["crashed"]
    message, hint = seen["crashed"][0]
    assert "stopped unexpectedly" in message and "MemoryError" in message
    assert "memory" in hint
    assert len(seen["stepped"]) == 4


def test_a_worker_that_cannot_start_is_a_crash_not_a_hang(qtbot):
    from app.worker import EngineWorker

    w = EngineWorker(["/nonexistent/python", "-m", "engine", "train"])
    seen = _record(w)
    with qtbot.waitSignal(w.ended, timeout=10000):
        w.start()
    assert seen["ended"] == ["crashed"]
    assert "could not be started" in seen["crashed"][0][0]


def test_queue_runs_one_heavy_job_at_a_time(qtbot, fake_argv):
    from app.jobs import JobQueue

    q = JobQueue()
    first = q.submit("first", fake_argv("--steps", "3", "--delay", "0.05"))
    second = q.submit("second", fake_argv("--steps", "1"))
    light = q.submit("light", fake_argv("--steps", "1"), heavy=False)
    qtbot.waitUntil(lambda: first.state == "running", timeout=10000)
    assert second.state == "queued"
    assert "first (running)" in q.describe()
    qtbot.waitUntil(lambda: light.done, timeout=30000)
    assert first.state == "running" or first.done  # the light job did not wait
    qtbot.waitUntil(lambda: second.done, timeout=30000)
    assert (first.state, second.state, light.state) == ("finished", "finished", "finished")
    assert q.describe() == "Idle"


def test_signal_emit_keeps_python_bools_alive(qtbot):
    """PySide6 6.12.0 decrements True/False on every Signal.emit: a few hundred training steps
    later Python aborts with `bool_dealloc`. pyproject.toml excludes that release."""
    from app.worker import EngineWorker

    w = EngineWorker(["true"])
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(200):
        w.ended.emit("finished")
    assert (sys.getrefcount(True), sys.getrefcount(False)) == before
