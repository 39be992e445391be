"""An engine job in a child process, its JSON-line events turned into Qt signals.

``EngineWorker`` runs ``python -m engine <command> ... --events - --quiet`` through QProcess
(never a thread of ours: MLX work must not hold the UI thread, and a crash in it must not take
the app down). Each stdout line is decoded with ``engine.events.decode_event`` and re-emitted as
a signal named for what happened. Cancel escalates: ``stop`` on stdin, wait, terminate, kill.
A worker that exits without a final event (killed, out of memory, a bug) is reported through
``crashed`` with a suggestion; the app carries on.
"""
from __future__ import annotations

import collections
import os
import time
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QProcessEnvironment, QTimer, Signal

from engine.events import (Checkpoint, CancelledEvent, Event, Failed, Finished, Log, Progress,
                           Started, Step, Validation, decode_event)
from engine.results import FINAL_STATES, JobState

from .commands import engine_argv  # noqa: F401  (re-exported for callers)
from .linebuffer import LineBuffer

# Where the `engine` package lives, so `python -m engine` works from a source checkout too.
ENGINE_ROOT = Path(__file__).resolve().parent.parent

OOM_HINT = ("it may have run out of memory: try a smaller batch size or maximum sequence "
            "length, gradient checkpointing, or a 4-bit base; the last checkpoint can be resumed")



class EngineWorker(QObject):
    """One engine command in a child process. Create, connect signals, then ``start()``.

    Signals carry the decoded ``engine.events`` objects. Exactly one of ``finished``,
    ``failed``, ``cancelled`` or ``crashed`` ends a run, followed by ``ended(state)``.
    """

    started = Signal(object)        # Started
    stepped = Signal(object)        # Step
    validated = Signal(object)      # Validation
    progressed = Signal(object)     # Progress
    checkpointed = Signal(object)   # Checkpoint
    logged = Signal(object)         # Log (also non-JSON stdout and stderr lines)
    finished = Signal(object)       # Finished
    failed = Signal(object)         # Failed
    cancelled = Signal(object)      # CancelledEvent
    crashed = Signal(str, str)      # message, hint
    ended = Signal(str)             # one of FINAL_STATES (a JobState)

    # Time spent on queued lines per event-loop turn: a burst of thousands of events must not
    # stall the UI (bench/ui_latency.py measures it).
    SLICE_SECONDS = 0.003

    def __init__(self, argv: list[str], *, name: str = "", env: dict[str, str] | None = None,
                 cwd: str | None = None, stop_grace_ms: int = 20000,
                 terminate_grace_ms: int = 5000, parent: QObject | None = None):
        super().__init__(parent)
        self.argv = list(argv)
        self.name = name or (argv[3] if len(argv) > 3 and argv[1:3] == ["-m", "engine"] else "")
        self.stop_grace_ms = stop_grace_ms
        self.terminate_grace_ms = terminate_grace_ms
        self.state = JobState.IDLE          # idle, running, stopping, then a FINAL_STATE
        self.final_event: Event | None = None
        self.last_checkpoint: Checkpoint | None = None
        self.exit_code: int | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.events_seen = 0
        self._stop_requested = False
        self._stdout = LineBuffer()
        self._stderr = LineBuffer()
        self._pending: collections.deque[str] = collections.deque()
        self._exited = False
        self._draining = False
        self._drain_scheduled = False

        self.proc = QProcess(self)
        penv = QProcessEnvironment.systemEnvironment()
        penv.insert("PYTHONUNBUFFERED", "1")
        pythonpath = penv.value("PYTHONPATH", "")
        penv.insert("PYTHONPATH", os.pathsep.join(p for p in (str(ENGINE_ROOT), pythonpath) if p))
        for k, v in (env or {}).items():
            penv.insert(k, v)
        self.proc.setProcessEnvironment(penv)
        if cwd:
            self.proc.setWorkingDirectory(cwd)
        self.proc.readyReadStandardOutput.connect(self._on_stdout)
        self.proc.readyReadStandardError.connect(self._on_stderr)
        self.proc.finished.connect(self._on_exit)
        self.proc.errorOccurred.connect(self._on_error)

    # -- control ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.state != JobState.IDLE:
            raise RuntimeError(f"worker already {self.state}")
        self.state = JobState.RUNNING
        self.started_at = time.monotonic()
        self.proc.start(self.argv[0], self.argv[1:])

    @property
    def running(self) -> bool:
        return self.state in (JobState.RUNNING, JobState.STOPPING)

    def stop(self) -> None:
        """Ask politely (``stop`` on stdin); terminate, then kill, if it does not listen."""
        if not self.running or self._stop_requested:
            return
        self._stop_requested = True
        self.state = JobState.STOPPING
        if self.proc.state() == QProcess.ProcessState.Running:
            self.proc.write(b"stop\n")
        else:  # still starting: a write now would be lost, so send it once it runs
            self.proc.started.connect(lambda: self.proc.write(b"stop\n"))
        QTimer.singleShot(self.stop_grace_ms, self._escalate_terminate)

    def _escalate_terminate(self) -> None:
        if self.running and not self._exited:
            self.logged.emit(Log(job=self.name, level="warning",
                                 message="the worker did not stop in time; terminating it"))
            self.proc.terminate()
            QTimer.singleShot(self.terminate_grace_ms, self._escalate_kill)

    def _escalate_kill(self) -> None:
        if self.running and not self._exited:
            self.proc.kill()

    def pid(self) -> int:
        return int(self.proc.processId())

    # -- reading ---------------------------------------------------------------------------

    def _on_stdout(self) -> None:
        self.feed(bytes(self.proc.readAllStandardOutput().data()))

    def feed(self, chunk: bytes) -> None:
        """Take raw stdout bytes (any chunking) and handle the lines they complete."""
        self._pending.extend(self._stdout.feed(chunk))
        if not self._drain_scheduled:
            self._drain()

    def _on_stderr(self) -> None:
        for line in self._stderr.feed(bytes(self.proc.readAllStandardError().data())):
            self._stderr_line(line)

    def _stderr_line(self, line: str) -> None:
        if line.strip():
            self.stderr_tail.append(line)
            self.logged.emit(Log(job=self.name, level="stderr", message=line))

    def _drain(self) -> None:
        """Handle queued lines a slice at a time, yielding to the event loop between slices."""
        if self._draining:
            return
        self._drain_scheduled = False
        self._draining = True
        deadline = time.perf_counter() + self.SLICE_SECONDS
        try:
            pending = self._pending
            while pending:
                for _ in range(min(16, len(pending))):
                    self._handle_line(pending.popleft())
                if time.perf_counter() > deadline:
                    break
        finally:
            self._draining = False
        if self._pending:
            if not self._drain_scheduled:  # one continuation at a time, or they pile up
                self._drain_scheduled = True
                QTimer.singleShot(0, self._drain)
        elif self._exited and self.running:
            self._conclude()

    def _handle_line(self, line: str) -> None:
        if not line.strip():
            return
        try:
            event = decode_event(line)
        except ValueError:  # also json.JSONDecodeError: a stray print, not an event
            self.logged.emit(Log(job=self.name, level="info", message=line))
            return
        self.events_seen += 1
        self.dispatch(event)

    def dispatch(self, event: Event) -> None:
        """Emit the signal for one decoded event."""
        if isinstance(event, Step):
            self.stepped.emit(event)
        elif isinstance(event, Validation):
            self.validated.emit(event)
        elif isinstance(event, Progress):
            self.progressed.emit(event)
        elif isinstance(event, Checkpoint):
            self.last_checkpoint = event
            self.checkpointed.emit(event)
        elif isinstance(event, Log):
            self.logged.emit(event)
        elif isinstance(event, Started):
            self.started.emit(event)
        elif isinstance(event, (Finished, Failed, CancelledEvent)):
            self.final_event = event

    # -- ending ----------------------------------------------------------------------------

    def _on_exit(self, exit_code: int, exit_status) -> None:
        self.exit_code = exit_code if exit_status == QProcess.ExitStatus.NormalExit else None
        self._pending.extend(self._stdout.feed(bytes(self.proc.readAllStandardOutput().data())))
        self._pending.extend(self._stdout.flush())
        for line in self._stderr.feed(bytes(self.proc.readAllStandardError().data())):
            self._stderr_line(line)
        for line in self._stderr.flush():
            self._stderr_line(line)
        self._exited = True
        if not self._drain_scheduled:
            self._drain()

    def _on_error(self, error) -> None:
        if error == QProcess.ProcessError.FailedToStart and self.running:
            self._exited = True
            self._end(JobState.CRASHED, crash=(f"the engine could not be started ({self.argv[0]}): "
                                        f"{self.proc.errorString()}",
                                        "check that Tailor is installed completely"))

    def _conclude(self) -> None:
        e = self.final_event
        # A reported result counts even with a non-zero status (`data check --strict`, `ollama
        # status` when unreachable exit 1 after their result); the status is in exit_code.
        if isinstance(e, Finished):
            self._end(JobState.FINISHED, event=e)
        elif isinstance(e, Failed):
            self._end(JobState.FAILED, event=e)
        elif isinstance(e, CancelledEvent):
            self._end(JobState.CANCELLED, event=e)
        elif self._stop_requested:
            # Terminated or killed after a stop request: a cancel, not a crash.
            ckpt = self.last_checkpoint.path if self.last_checkpoint else ""
            self._end(JobState.CANCELLED, event=CancelledEvent(
                job=self.name, message="stopped (the worker had to be terminated)",
                checkpoint=ckpt))
        else:
            self._end(JobState.CRASHED, crash=self._crash_message())

    def _crash_message(self) -> tuple[str, str]:
        if self.exit_code is None:
            msg = "the engine worker stopped unexpectedly (it was killed or crashed)"
            hint = OOM_HINT
        elif self.exit_code == 0:
            msg = "the engine worker ended without reporting a result"
            hint = "see the log for details"
        else:
            msg = f"the engine worker exited with status {self.exit_code}"
            hint = OOM_HINT if self.exit_code in (137, -9, 9) else "see the log for details"
        last = next((l.strip() for l in reversed(self.stderr_tail) if l.strip()), "")
        if last:
            msg += f": {last}"
        if self.last_checkpoint is not None and "resumed" not in hint:
            hint += f"; the checkpoint at step {self.last_checkpoint.iteration} can be resumed"
        return msg, hint

    def _end(self, state: JobState, event: Event | None = None,
             crash: tuple[str, str] | None = None) -> None:
        self.state = state
        if state == JobState.FINISHED:
            self.finished.emit(event)
        elif state == JobState.FAILED:
            self.failed.emit(event)
        elif state == JobState.CANCELLED:
            self.cancelled.emit(event)
        else:
            self.crashed.emit(*(crash or ("the engine worker crashed", "")))
        self.ended.emit(state)
