"""Typed progress events, the JSON-lines wire format, and cooperative cancellation.

Every long engine job (download, data check, train, fuse, export, ollama) reports through a
``Reporter``: a callable that takes an ``Event``. The worker process writes each event as one
JSON object per line (``{"event": "<kind>", ...}``); the app decodes them back with
``decode_event``. Jobs check a ``CancelToken`` between steps and raise ``Cancelled``.

A command's result is a ``Result`` dataclass registered by its ``tag`` like the events:
``Finished.result`` carries it as ``{"type": tag, ...fields}`` and ``decode_event`` rebuilds
the same class, so the app reads typed fields. A failure carries an ``ErrorCode``.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Callable, ClassVar, IO

from .results import Check, Result, _finite, _plain, decode_result, result_class  # noqa: F401

# 2: Finished.result is a typed Result ({"type": tag, ...}) and Failed has a code; version 1's
# plain result dict still decodes (as a dict).
SCHEMA_VERSION = 2


class ErrorCode(StrEnum):
    """What kind of failure ended a job: the app decides on this, never on a class name."""

    BAD_INPUT = "bad_input"              # a file, folder, setting or name the user gave
    NAME_TAKEN = "name_taken"            # an adapter or Ollama model of that name exists
    NOT_RUNNING = "not_running"          # Ollama (or another server) did not answer
    NETWORK = "network"                  # the Hugging Face Hub could not be reached or was silent
    OLLAMA = "ollama"                    # Ollama answered and refused or failed the request
    LOCKED = "locked"                    # another running job holds the adapter or output
    DISK_FULL = "disk_full"              # no space (or quota, or file too large)
    READ_ONLY = "read_only"              # the folder is on a read-only file system
    PERMISSION_DENIED = "permission_denied"
    OUT_OF_MEMORY = "out_of_memory"
    DIVERGED = "diverged"                # the training loss became NaN or infinite
    LIMIT = "limit"                      # a chat template exceeded its time or size budget
    INTERNAL = "internal"                # a bug in Tailor (the traceback is in a log file)


class Cancelled(Exception):
    """Raised inside a job when the user asked it to stop."""


class TailorError(Exception):
    """An error with a message meant for the user, an optional hint on what to do next, and
    an ``ErrorCode`` (a subclass sets its own; ``code=`` overrides it for one raise)."""

    code: ErrorCode = ErrorCode.BAD_INPUT

    def __init__(self, message: str, hint: str = "", code: ErrorCode | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


# ----------------------------------------------------------------------------------------------
# Events


_REGISTRY: dict[str, type["Event"]] = {}


@dataclass
class Event:
    kind: ClassVar[str] = "event"
    job: str = ""
    time: float = field(default_factory=time.time)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.kind] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "v": SCHEMA_VERSION, **_finite(_plain(asdict(self)))}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


@dataclass
class Started(Event):
    kind: ClassVar[str] = "started"
    config: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


@dataclass
class Progress(Event):
    """Generic progress of a stage (download, tokenize, fuse, export, upload...)."""

    kind: ClassVar[str] = "progress"
    stage: str = ""
    done: float = 0.0
    total: float = 0.0
    message: str = ""

    @property
    def fraction(self) -> float:
        return (self.done / self.total) if self.total else 0.0


@dataclass
class Step(Event):
    kind: ClassVar[str] = "step"
    iteration: int = 0
    total_iterations: int = 0
    epoch: float = 0.0
    train_loss: float = 0.0
    learning_rate: float = 0.0
    tokens_per_second: float = 0.0
    trained_tokens: int = 0
    peak_memory_gb: float = 0.0
    eta_seconds: float = 0.0


@dataclass
class Validation(Event):
    kind: ClassVar[str] = "validation"
    iteration: int = 0
    val_loss: float = 0.0
    best_val_loss: float = 0.0
    is_best: bool = False


@dataclass
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    iteration: int = 0
    path: str = ""


@dataclass
class Log(Event):
    kind: ClassVar[str] = "log"
    level: str = "info"
    message: str = ""


class _CarriesResult:
    """For an event with a ``result`` field: the wire form keeps the Result's type tag (which
    asdict drops)."""

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        if isinstance(self.result, Result):
            d["result"] = self.result.to_dict()
        return d


@dataclass
class Finished(_CarriesResult, Event):
    """The job's end. ``result``: the command's Result (a plain dict from a version-1 worker,
    or from a command that has no Result class yet)."""

    kind: ClassVar[str] = "finished"
    result: Result | dict = field(default_factory=dict)


@dataclass
class Failed(Event):
    """``code``: an ErrorCode value; ``error_type`` (the exception's class) is for logs only."""

    kind: ClassVar[str] = "failed"
    message: str = ""
    hint: str = ""
    error_type: str = ""
    code: str = ""


@dataclass
class CancelledEvent(Event):
    kind: ClassVar[str] = "cancelled"
    message: str = ""
    checkpoint: str = ""


def decode_event(line: str | bytes) -> Event:
    """Decode one JSON line into its Event subclass; unknown keys are ignored.

    Raises ValueError on a line that is not a JSON event object.
    """
    obj = json.loads(line)
    if not isinstance(obj, dict) or "event" not in obj:
        raise ValueError(f"not an event: {line!r:.80}")
    cls = _REGISTRY.get(obj["event"])
    if cls is None:
        return Log(level="debug", message=f"unknown event {obj['event']!r}")
    names = {f.name for f in fields(cls)}
    event = cls(**{k: v for k, v in obj.items() if k in names})
    if isinstance(event, Finished):
        event.result = decode_result(event.result)
    elif isinstance(event, Failed) and not event.code:  # version 1: no code on the wire
        event.code = ErrorCode.INTERNAL if event.error_type == "InternalError" else (
            ErrorCode.NAME_TAKEN if event.error_type == "OllamaNameTaken" else "")
    return event


# ----------------------------------------------------------------------------------------------
# Reporters


Reporter = Callable[[Event], None]


def null_reporter(event: Event) -> None:
    """A reporter that drops everything."""


class JsonLinesReporter:
    """Writes each event as one JSON line and flushes, so a reading process sees it at once."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = event.to_json()
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class ListReporter:
    """Keeps events in a list (tests, and the engine's own records)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def fan_out(*reporters: Reporter | None) -> Reporter:
    active = [r for r in reporters if r is not None]

    def report(event: Event) -> None:
        for r in active:
            r(event)

    return report


class TerminalReporter:
    """A human view of the same events, for `tailor ...` run in a terminal.

    ``errors_only`` (``--quiet``): no progress, but failures and cancellations still print;
    quiet never means a silent exit 1.
    """

    def __init__(self, stream: IO[str] | None = None, min_interval: float = 0.5,
                 errors_only: bool = False):
        self.stream = stream or sys.stderr
        self.min_interval = min_interval
        self.errors_only = errors_only
        self._last_progress = 0.0

    def __call__(self, e: Event) -> None:
        if self.errors_only and not isinstance(e, (Failed, CancelledEvent)):
            return
        w = self.stream.write
        if isinstance(e, Step):
            eta = f"{e.eta_seconds / 60:.1f} min" if e.eta_seconds else "-"
            w(f"[{e.job}] step {e.iteration}/{e.total_iterations} epoch {e.epoch:.2f} "
              f"loss {e.train_loss:.4f} lr {e.learning_rate:.2e} {e.tokens_per_second:.0f} tok/s "
              f"peak {e.peak_memory_gb:.2f} GB eta {eta}\n")
        elif isinstance(e, Validation):
            star = " *best*" if e.is_best else ""
            w(f"[{e.job}] step {e.iteration}: val loss {e.val_loss:.4f}{star}\n")
        elif isinstance(e, Progress):
            now = time.monotonic()
            if e.total and e.done >= e.total or now - self._last_progress >= self.min_interval:
                self._last_progress = now
                pct = f"{100 * e.fraction:5.1f}%" if e.total else ""
                w(f"[{e.job}] {e.stage} {pct} {e.message}\n")
        elif isinstance(e, Checkpoint):
            w(f"[{e.job}] checkpoint at step {e.iteration}: {e.path}\n")
        elif isinstance(e, Log):
            if e.level != "debug":
                w(f"[{e.job}] {e.message}\n")
        elif isinstance(e, Started):
            w(f"[{e.job}] started\n")
        elif isinstance(e, Finished):
            w(f"[{e.job}] finished\n")
        elif isinstance(e, Failed):
            w(f"[{e.job}] FAILED: {e.message}\n" + (f"  hint: {e.hint}\n" if e.hint else ""))
        elif isinstance(e, CancelledEvent):
            w(f"[{e.job}] cancelled. {e.message}\n")
        self.stream.flush()


def stage_progress(report: Reporter, job: str, stage: str, start: float = 0.0, end: float = 1.0
                   ) -> Callable[[float, float, str], None]:
    """Map one stage's (done, total) onto the slice [start, end] of a whole job's bar.

    Returns ``progress(done, total, message="")`` that emits ``Progress`` events whose ``done``
    is in [0, 1000] of the whole job (so load → train → fuse → export share one bar).
    """

    def progress(done: float, total: float, message: str = "") -> None:
        frac = (done / total) if total else 0.0
        whole = start + (end - start) * min(max(frac, 0.0), 1.0)
        report(Progress(job=job, stage=stage, done=round(whole * 1000, 1), total=1000,
                        message=message))

    return progress


@dataclass
class Job:
    """What a domain function gets to do its work as part of a job: where to report, how to
    notice a stop, and (for work inside other work) which part of the job's bar is its own.

    Only the command runner emits a job's ``Finished``/``Failed``; a domain function returns
    its typed Result. Work inside other work takes ``job.nested(start, end)``: the same name
    and cancel token, every Progress it reports mapped onto that sub-range of the parent's
    bar, and ``started`` said as a log line instead of a second ``Started`` event."""

    name: str
    report: Reporter = null_reporter
    cancel: CancelToken = field(default_factory=lambda: CancelToken())
    is_nested: bool = False

    def nested(self, start: float, end: float) -> "Job":
        """The part [start, end] (fractions of this job's bar) for work inside it."""
        parent = self.report

        def report(event: Event) -> None:
            if isinstance(event, Progress) and event.total:
                frac = min(max(event.done / event.total, 0.0), 1.0)
                event = Progress(job=self.name, stage=event.stage, message=event.message,
                                 done=round((start + (end - start) * frac) * 1000, 1),
                                 total=1000)
            parent(event)

        return Job(self.name, report, self.cancel, is_nested=True)

    def progress(self, stage: str, start: float = 0.0, end: float = 1.0
                 ) -> Callable[[float, float, str], None]:
        """``progress(done, total, message="")`` for a stage filling [start, end] of this
        job's bar (see stage_progress)."""
        return stage_progress(self.report, self.name, stage, start, end)

    def started(self, config: dict, info: dict | None = None) -> None:
        """This work begins with ``config``: the job's Started event, or (nested) a log line."""
        if self.is_nested:
            self.report(Log(job=self.name, level="debug",
                            message=f"started: {json.dumps(_plain(config), default=str)}"))
        else:
            self.report(Started(job=self.name, config=config, info=info or {}))

    def log(self, message: str, level: str = "info") -> None:
        self.report(Log(job=self.name, level=level, message=message))


def as_job(job: "Job | str", report: Reporter = null_reporter,
           cancel: "CancelToken | None" = None) -> Job:
    """``job`` itself, or a top-level Job named ``job`` (the older report=/cancel=/job= calls)."""
    if isinstance(job, Job):
        return job
    return Job(job, report or null_reporter, cancel or CancelToken())


# ----------------------------------------------------------------------------------------------
# Cancellation


class CancelToken:
    """A cooperative stop request: set by SIGINT, `stop` on stdin, or the app; checked by jobs."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "stop requested") -> None:
        self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)

    def watch_stdin(self, stream: IO[str] | None = None) -> threading.Thread:
        """Cancel when a line `stop` arrives on the stream (the app's polite stop)."""
        stream = stream or sys.stdin

        def reader() -> None:
            try:
                for line in stream:
                    if line.strip().lower() in {"stop", "cancel"}:
                        self.cancel("stop requested")
                        return
            except (OSError, ValueError):
                return

        t = threading.Thread(target=reader, name="tailor-stdin-stop", daemon=True)
        t.start()
        return t


# ----------------------------------------------------------------------------------------------
# A served generate's replies (`tailor generate --serve`): one worker answers many requests, so
# each event names the request it belongs to, and a request's end is not the job's end.


@dataclass
class Reply(Event):
    """A piece of the reply to request ``request`` (the id the request carried)."""

    kind: ClassVar[str] = "reply"
    request: str = ""
    text: str = ""
    tokens: int = 0  # tokens generated so far for this request


@dataclass
class ReplyFinished(_CarriesResult, Event):
    """Request ``request`` answered, or stopped (``result.stopped``); the worker serves on.
    ``result``: a GenerateReply."""

    kind: ClassVar[str] = "reply.finished"
    request: str = ""
    result: Result | dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.result, dict):  # (from the wire)
            self.result = decode_result(self.result)


@dataclass
class ReplyFailed(Event):
    """Request ``request`` refused or failed (a bad line, an unknown adapter, a template that
    fails...): a message, a hint and an ErrorCode value; the worker serves on."""

    kind: ClassVar[str] = "reply.failed"
    request: str = ""
    message: str = ""
    hint: str = ""
    code: str = ""


@dataclass
class Metrics(Event):
    """Preference tuning's metrics of one step (``split`` "train") or validation ("valid"):
    loss, reward_accuracy (None when every pair tied), reward_ties, reward_margin,
    chosen_logp, rejected_logp; nll and odds_ratio for ORPO (engine/train/preference.py)."""

    kind: ClassVar[str] = "metrics"
    iteration: int = 0
    split: str = "train"
    values: dict = field(default_factory=dict)
