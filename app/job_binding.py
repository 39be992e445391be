"""One engine job connected to the page that started it.

Every page that runs a job wants the same wiring: a progress bar that follows the job's
``Progress`` events, the buttons that start it disabled (and Cancel enabled) while it runs,
a failure shown as its message and hint, a crash shown the same way, a cancel said plainly,
and everything put back when the job ends. ``bind_job`` does that wiring once, so a page
supplies only what to do with the typed result (and, where it words a failure its own way,
what to do with that).
"""
from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

from PySide6.QtWidgets import QProgressBar, QWidget

from engine.events import CancelledEvent, Failed, Progress
from engine.results import JobState

# (message, hint, the Failed event; None when the worker crashed without one)
FailureHandler = Callable[[str, str, "Failed | None"], None]


def show_progress(bar: QProgressBar, e: Progress) -> None:
    """A job's progress on ``bar``, in thousandths so a long job still moves, with its stage."""
    if e.total:
        bar.setMaximum(1000)
        bar.setValue(int(1000 * e.done / e.total))
    bar.setFormat(f"{e.message or e.stage} %p%")


def failure_html(title: str, message: str, hint: str) -> str:
    """``title: message`` and the hint on its own line, escaped for a Banner."""
    return f"{title}: {html.escape(message)}" + (f"<br>{html.escape(hint)}" if hint else "")


def bind_job(job, on_result: Callable[[Any], None], *, banner=None,
             progress: QProgressBar | None = None, enable: Sequence[QWidget] = (),
             disable: Sequence[QWidget] = (), running: str = "", failed: str = "",
             crashed: str = "", cancelled: str = "", on_failure: FailureHandler | None = None,
             on_cancelled: Callable[[CancelledEvent], None] | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             on_ended: Callable[[JobState], None] | None = None) -> None:
    """Connect ``job`` (from ``JobQueue.submit``) to a page's widgets, at once.

    ``on_result`` gets the ``Finished`` event's typed result. While the job runs, ``progress``
    is shown (from 0) and follows its events (or ``on_progress`` gets them), the widgets in
    ``disable`` are disabled and those in ``enable`` enabled; ``banner`` says ``running``.
    A failure shows "``failed``: message<br>hint" on ``banner`` (a crash "``crashed``: ...",
    ``failed`` when not given) unless ``on_failure(message, hint, failed_event_or_None)``
    handles it; a cancel shows ``cancelled`` as a warning unless ``on_cancelled`` handles it.
    When the job ends the widgets are put back, ``progress`` hidden, then ``on_ended(state)``.
    """
    w = job.worker
    if progress is not None:
        progress.setValue(0)
        progress.show()
    for widget in disable:
        widget.setEnabled(False)
    for widget in enable:
        widget.setEnabled(True)
    if banner is not None and running:
        banner.show_message("info", running)

    def failure(message: str, hint: str, event: Failed | None) -> None:
        if on_failure is not None:
            on_failure(message, hint, event)
        elif banner is not None:
            title = failed if event is not None else (crashed or failed)
            banner.show_message("error", failure_html(title or "The job failed", message, hint))

    def cancel(event: CancelledEvent) -> None:
        if on_cancelled is not None:
            on_cancelled(event)
        elif banner is not None and cancelled:
            banner.show_message("warn", cancelled)

    def ended(state: str) -> None:
        if progress is not None:
            progress.hide()
        for widget in disable:
            widget.setEnabled(True)
        for widget in enable:
            widget.setEnabled(False)
        if on_ended is not None:
            on_ended(JobState(state))

    if on_progress is not None:
        w.progressed.connect(on_progress)
    elif progress is not None:
        w.progressed.connect(lambda e: show_progress(progress, e))
    w.finished.connect(lambda e: on_result(e.result))
    w.failed.connect(lambda e: failure(e.message, e.hint, e))
    w.crashed.connect(lambda m, h: failure(m, h, None))
    w.cancelled.connect(cancel)
    w.ended.connect(ended)
