"""One heavy engine job at a time, the rest queued, every job's state visible.

Training, export, fuse, download and the Ollama hand-off each need most of a Mac's memory, so
they run one after another; light jobs (a data check, a generation) start at once.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from PySide6.QtCore import QObject, QTimer, Signal

from engine.results import FINAL_STATES, JobState

from .worker import EngineWorker

_ids = itertools.count(1)


@dataclass(eq=False)
class Job:
    title: str
    worker: EngineWorker
    heavy: bool = True
    id: int = field(default_factory=lambda: next(_ids))
    state: JobState = JobState.QUEUED  # then running, stopping, and one of FINAL_STATES

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES


class JobQueue(QObject):
    """Runs submitted jobs; ``changed`` fires whenever any job's state changes."""

    changed = Signal()
    job_started = Signal(object)   # Job
    job_ended = Signal(object)     # Job

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.jobs: list[Job] = []

    def submit(self, title: str, argv: list[str], *, heavy: bool = True, **worker_kw) -> Job:
        """Queue a job and return it at once; connect to ``job.worker`` signals now: it starts
        on a later turn of the event loop at the earliest."""
        worker = EngineWorker(argv, parent=self, **worker_kw)
        job = Job(title=title, worker=worker, heavy=heavy)
        worker.ended.connect(lambda state, j=job: self._on_ended(j, state))
        self.jobs.append(job)
        self.changed.emit()
        QTimer.singleShot(0, self._schedule)
        return job

    @property
    def running(self) -> list[Job]:
        return [j for j in self.jobs if j.state in (JobState.RUNNING, JobState.STOPPING)]

    @property
    def queued(self) -> list[Job]:
        return [j for j in self.jobs if j.state == JobState.QUEUED]

    @property
    def busy(self) -> bool:
        return any(j.heavy for j in self.running)

    def cancel(self, job: Job) -> None:
        """Drop a queued job, or ask a running one to stop."""
        if job.state == JobState.QUEUED:
            job.state = JobState.CANCELLED
            self.changed.emit()
            self.job_ended.emit(job)
        elif job.state == JobState.RUNNING:
            job.state = JobState.STOPPING
            job.worker.stop()
            self.changed.emit()

    def stop_all(self) -> None:
        for job in list(self.jobs):
            self.cancel(job)

    def describe(self) -> str:
        """One line for the status bar."""
        run = self.running
        if not run:
            return "Idle"
        text = ", ".join(f"{j.title} ({j.state})" for j in run)
        if self.queued:
            text += f"; {len(self.queued)} waiting"
        return text

    def _schedule(self) -> None:
        for job in self.queued:
            if job.heavy and self.busy:
                continue
            job.state = JobState.RUNNING
            job.worker.start()
            self.job_started.emit(job)
            self.changed.emit()

    def _on_ended(self, job: Job, state: str) -> None:
        job.state = JobState(state)
        self.job_ended.emit(job)
        self.changed.emit()
        # Forget finished jobs beyond a short history; their workers go with them.
        done = [j for j in self.jobs if j.done]
        for old in done[:-20]:
            self.jobs.remove(old)
            old.worker.deleteLater()
        QTimer.singleShot(0, self._schedule)
