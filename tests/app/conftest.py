"""App test helpers: the fake engine worker and screenshot checks."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@pytest.fixture
def fake_argv():
    """``fake_argv("--steps", "5")`` -> argv of a replaying stand-in worker."""
    def make(*args: str) -> list[str]:
        return [sys.executable, str(FAKE_ENGINE), *args]
    return make


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window with its own settings file; questions answered "yes"."""
    from PySide6.QtCore import QSettings

    from pytestqt.exceptions import TimeoutError as TimeoutError_

    from app.main import make_app
    from app.main_window import MainWindow

    make_app([])
    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings, confirm=lambda title, text, verb: True, first_run_sample=False)
    w.resize(1280, 800)
    # Not qtbot.addWidget: pytest-qt closes and deletes registered widgets before fixture
    # teardown, which would destroy the workers' QProcess objects under running jobs.
    w.show()
    qtbot.waitExposed(w)
    yield w
    # Leave no worker behind: ask every job to stop; kill what has not ended in 10 s.
    queue = w.state.queue
    queue.stop_all()
    try:
        qtbot.waitUntil(lambda: not queue.running, timeout=10000)
    except TimeoutError_:
        for job in queue.running:
            job.worker.proc.kill()
        qtbot.waitUntil(lambda: not queue.running, timeout=20000)
    w.close()
    w.deleteLater()


def recorded_submits(queue, monkeypatch) -> list:
    """Make ``queue.submit`` record each job (its argv on ``job.worker.argv``) without
    starting it: the test ends the jobs it cares about itself. -> the list of jobs."""
    from app.jobs import Job
    from app.worker import EngineWorker

    submitted = []

    def submit(title, argv, heavy=True, **_):
        job = Job(title=title, worker=EngineWorker(argv))
        submitted.append(job)
        return job
    monkeypatch.setattr(queue, "submit", submit)
    return submitted


def screenshot(widget, folder: Path, name: str) -> Path:
    """Save ``widget`` as PNG under ``folder/screenshots`` and check it is not blank."""
    import numpy as np

    out = folder / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    image = widget.grab().toImage()
    path = out / f"{name}.png"
    assert image.save(str(path)), path
    image = image.convertToFormat(image.Format.Format_RGB32)
    ptr = image.constBits()
    arr = np.frombuffer(ptr, dtype=np.uint8, count=image.sizeInBytes()).reshape(
        image.height(), image.bytesPerLine())
    assert arr.std() > 10, f"{path} looks blank (pixel std {arr.std():.1f})"
    return path


def small_chat_dataset(folder: Path, n: int = 40, bad_lines: int = 0) -> Path:
    import json

    path = folder / "chat.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is {i} plus one?"},
                {"role": "assistant", "content": f"{i} plus one is {i + 1}."}]}) + "\n")
            if i < bad_lines:
                f.write('{"messages": [oops\n')
    return path
