"""One job-state vocabulary (issue 13): the worker, the queue and the Train page's run use the
engine's JobState (engine/results.py), the same values the library's run records hold."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.results import FINAL_STATES, JobState

APP = Path(__file__).resolve().parents[2] / "app"
STATE_NAMES = {s.value for s in JobState}


@pytest.mark.parametrize("module", ["worker.py", "jobs.py"])
def test_the_worker_and_the_queue_spell_no_job_state_as_a_string(module):
    """A typo'd "canceled" in one place would never match; only JobState names them."""
    tree = ast.parse((APP / module).read_text(encoding="utf-8"))
    literals = [f"{module}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and n.value in STATE_NAMES]
    assert not literals, literals


def test_a_queued_job_moves_through_job_states_and_ends_in_one(qtbot, fake_argv):
    from app.jobs import JobQueue

    q = JobQueue()
    ran = q.submit("ran", fake_argv("--steps", "2"))
    dropped = q.submit("dropped", fake_argv("--steps", "1"))
    assert ran.state is JobState.QUEUED and ran.worker.state is JobState.IDLE
    q.cancel(dropped)  # still queued: dropped without starting
    assert dropped.state is JobState.CANCELLED and dropped.done
    ended = []
    ran.worker.ended.connect(ended.append)
    qtbot.waitUntil(lambda: ran.done, timeout=30000)
    assert ran.state is JobState.FINISHED and ran.worker.state is JobState.FINISHED
    assert ended == ["finished"] and ran.state in FINAL_STATES
    assert q.describe() == "Idle"
