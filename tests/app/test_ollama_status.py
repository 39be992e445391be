"""The Export page's Ollama status line shows the latest check's answer.

The flake this pins (s5): opening the page starts a check of the host set then; the user (or
a test) sets another host and presses Check. Both checks run side by side and end in any
order; the first one ending last had put its stale "not running" on the line for good, so
test_send_to_ollama_succeeds_and_a_refusal_reads_clearly waited 60 s for "running" in vain.
The jobs here are recorded, never started: the test ends them in the order it needs.
"""
from __future__ import annotations

import pytest

from engine.events import CancelledEvent, Failed, Finished
from engine.results import OllamaStatus

from .conftest import recorded_submits

pytestmark = [pytest.mark.gui]

HOST = "127.0.0.1:45678"
RUNNING = OllamaStatus(host=f"http://{HOST}", reachable=True, version="0.6.8", models=["a"])
STALE = OllamaStatus(host="http://127.0.0.1:11434", reachable=False,
                     error="connection refused")


def _finish(job, status: OllamaStatus) -> None:
    job.worker.finished.emit(Finished(job="ollama", result=status))
    job.worker.ended.emit("finished")


@pytest.fixture
def checks(window, monkeypatch):
    """The page opened (its own first check, of the default host) and a second check of
    HOST, both still running: -> (page, first job, second job)."""
    page = window.pages["Export"]
    submitted = recorded_submits(window.state.queue, monkeypatch)
    window.show_page("Export")
    assert len(submitted) == 1 and "--host" not in submitted[0].worker.argv
    window.settings.setValue("ollama/host", HOST)
    page.check_ollama()
    argv = submitted[1].worker.argv
    assert argv[argv.index("--host") + 1] == HOST
    assert page.ollama_status.text() == "checking…"
    return page, submitted[0], submitted[1]


def test_an_earlier_check_ending_last_does_not_overwrite_the_latest(checks):
    page, first, second = checks
    _finish(second, RUNNING)
    assert page.ollama_status.text() == f"running (version 0.6.8, 1 models) at http://{HOST}"
    _finish(first, STALE)  # the stale answer comes last
    assert page.ollama_status.text().startswith("running (version 0.6.8"), \
        page.ollama_status.text()
    assert page.ollama.host == f"http://{HOST}"


def test_an_earlier_check_failing_last_does_not_overwrite_the_latest(checks):
    page, first, second = checks
    _finish(second, RUNNING)
    first.worker.failed.emit(Failed(job="ollama", message="Ollama did not answer", hint=""))
    first.worker.ended.emit("failed")
    assert page.ollama_status.text().startswith("running (version 0.6.8")


def test_the_latest_answer_is_shown_whichever_order_they_end_in(checks):
    page, first, second = checks
    _finish(first, STALE)  # the stale one first: still checking the host now set
    assert page.ollama_status.text() == "checking…"
    _finish(second, RUNNING)
    assert page.ollama_status.text().startswith("running (version 0.6.8")


def test_a_check_cancelled_without_an_answer_leaves_the_last_known_status(window, monkeypatch):
    page = window.pages["Export"]
    submitted = recorded_submits(window.state.queue, monkeypatch)
    page.set_ollama(RUNNING)
    page.check_ollama()
    assert page.ollama_status.text() == "checking…"
    submitted[-1].worker.cancelled.emit(CancelledEvent(job="ollama", message="stopped"))
    submitted[-1].worker.ended.emit("cancelled")
    assert page.ollama_status.text().startswith("running (version 0.6.8")
