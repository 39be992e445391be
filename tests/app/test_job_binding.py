"""app/job_binding.py (issue 13): one helper connects a job to a page (progress, buttons,
failure and crash banners, cancel), so a page supplies only what to do with the typed
result; and engine command lines come from app/commands.py's named-argument builders."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from engine.events import CancelledEvent, Failed, Finished, Progress, decode_event
from engine.results import ExportResult, JobState

APP = Path(__file__).resolve().parents[2] / "app"


@pytest.fixture
def page(qtbot):
    """A bare page: a banner, a progress bar, a start button and a cancel button."""
    from PySide6.QtWidgets import QProgressBar, QPushButton, QVBoxLayout, QWidget

    from app.widgets import Banner

    w = QWidget()
    lay = QVBoxLayout(w)
    w.banner, w.progress = Banner(), QProgressBar()
    w.start, w.cancel = QPushButton("Start"), QPushButton("Cancel")
    for child in (w.banner, w.progress, w.start, w.cancel):
        lay.addWidget(child)
    w.progress.hide()
    w.cancel.setEnabled(False)
    qtbot.addWidget(w)
    w.show()
    return w


def _job(argv=("python", "-m", "engine", "export")):
    """A job whose worker is never started: the test emits its signals."""
    from app.jobs import Job
    from app.worker import EngineWorker

    return Job(title="t", worker=EngineWorker(list(argv)))


def _bind(page, job, **kw):
    from app.job_binding import bind_job

    got = {"results": [], "ended": []}
    bind_job(job, got["results"].append, banner=page.banner, progress=page.progress,
             disable=[page.start], enable=[page.cancel], running="Exporting pip…",
             failed="Export failed", crashed="The export worker crashed",
             cancelled="Export cancelled; nothing was written.",
             on_ended=got["ended"].append, **kw)
    return got


def test_a_running_job_shows_its_progress_and_disables_what_started_it(page):
    job = _job()
    got = _bind(page, job)
    assert page.progress.isVisible() and page.progress.value() == 0
    assert not page.start.isEnabled() and page.cancel.isEnabled()
    assert page.banner.kind == "info" and page.banner.plain_text() == "Exporting pip…"
    job.worker.progressed.emit(Progress(stage="write", done=3, total=4, message="tensors"))
    assert page.progress.value() == 750 and page.progress.text() == "tensors 75%"
    # the typed result reaches the page as it came off the wire
    line = Finished(job="export", result=ExportResult(path=Path("/x.gguf"), kind="adapter"))
    job.worker.finished.emit(decode_event(line.to_json()))
    job.worker.ended.emit("finished")
    (result,) = got["results"]
    assert isinstance(result, ExportResult) and result.adapter_only
    assert got["ended"] == [JobState.FINISHED] and isinstance(got["ended"][0], JobState)
    assert not page.progress.isVisible()
    assert page.start.isEnabled() and not page.cancel.isEnabled()


def test_a_failure_shows_its_message_and_hint_and_a_crash_its_own_title(page):
    job = _job()
    got = _bind(page, job)
    job.worker.failed.emit(Failed(job="export", message="disk full <3 GB>",
                                  hint="free some space"))
    job.worker.ended.emit("failed")
    assert page.banner.kind == "error"
    assert page.banner.plain_text() == "Export failed: disk full <3 GB>\nfree some space"
    assert got["results"] == [] and got["ended"] == [JobState.FAILED]
    assert page.start.isEnabled() and not page.progress.isVisible()

    job = _job()
    _bind(page, job)
    job.worker.crashed.emit("the engine worker stopped unexpectedly", "")
    assert page.banner.plain_text() == ("The export worker crashed: the engine worker "
                                        "stopped unexpectedly")


def test_a_page_that_words_its_own_failure_gets_the_event_or_none_for_a_crash(page):
    seen = []
    job = _job()
    _bind(page, job, on_failure=lambda m, h, e: seen.append((m, h, e)))
    failed = Failed(job="x", message="in use", hint="pick another")
    job.worker.failed.emit(failed)
    job.worker.crashed.emit("killed", "memory")
    assert seen == [("in use", "pick another", failed), ("killed", "memory", None)]
    assert page.banner.kind == "info"  # the page's handler owns the banner


def test_a_cancel_is_said_plainly(page):
    job = _job()
    got = _bind(page, job)
    job.worker.cancelled.emit(CancelledEvent(job="export", message="stopped"))
    job.worker.ended.emit("cancelled")
    assert page.banner.kind == "warn"
    assert page.banner.plain_text() == "Export cancelled; nothing was written."
    assert got["ended"] == [JobState.CANCELLED]


# -- the pages use it, and build argv only through app/commands.py ------------------------------

BOUND_PAGES = ["data.py", "train.py", "export.py", "model.py"]


@pytest.mark.parametrize("module", BOUND_PAGES)
def test_the_page_connects_its_jobs_through_bind_job(module):
    """A page that wires finished/failed/crashed by hand drifts from the others (one forgot
    to re-enable its button, one showed no hint): only bind_job connects those."""
    text = (APP / "pages" / module).read_text(encoding="utf-8")
    assert "bind_job(" in text
    for signal in ("finished", "failed", "crashed", "cancelled", "ended"):
        assert f".{signal}.connect(" not in text, f"{module} connects {signal} by hand"


@pytest.mark.parametrize("module", sorted(p.name for p in (APP / "pages").glob("*.py")))
def test_no_page_splices_an_engine_command_line(module):
    """Flags go in through the builders' named arguments (strict=, preview=), never by
    inserting into the list a builder returned."""
    tree = ast.parse((APP / "pages" / module).read_text(encoding="utf-8"))
    spliced = []
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AugAssign) else [])
        for t in targets:
            base = t.value if isinstance(t, ast.Subscript) else t
            if isinstance(base, ast.Name) and "argv" in base.id and (
                    isinstance(t, ast.Subscript) or isinstance(node, ast.AugAssign)):
                spliced.append(f"{module}:{node.lineno}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("insert", "append", "extend")
                and isinstance(node.func.value, ast.Name) and "argv" in node.func.value.id):
            spliced.append(f"{module}:{node.lineno}")
    assert not spliced, spliced


def test_the_builders_place_strict_and_preview_before_the_event_flags():
    from app.commands import data_check_command, train_command

    assert data_check_command("d.jsonl", "m", preview=5, python="py") == [
        "py", "-m", "engine", "data", "check", "d.jsonl", "--model", "m", "--preview", "5",
        "--events", "-", "--quiet"]
    assert "--preview" not in data_check_command("d.jsonl", "m", python="py")
    argv = train_command("m", "d.jsonl", "n", {}, strict=True, python="py")
    assert argv[-4:] == ["--strict", "--events", "-", "--quiet"]
    assert "--strict" not in train_command("m", "d.jsonl", "n", {}, python="py")


def test_the_data_page_asks_for_five_preview_examples():
    from app.pages.data import check_argv

    argv = check_argv("/d/chat.jsonl", "/m")
    assert argv[argv.index("--preview") + 1] == "5" and argv[-3:] == ["--events", "-", "--quiet"]
