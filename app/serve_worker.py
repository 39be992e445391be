"""The Playground's model worker: one `tailor generate --serve` process that keeps a base model
loaded and answers one request after another (engine/generate.py describes the protocol).

An ``EngineWorker`` (same process handling, line buffer, crash report and stop escalation)
that can also write requests to the child's stdin, and turns the per-request events into
signals. Requests written before the process runs are sent once it does.
"""
from __future__ import annotations

import itertools
import json

from PySide6.QtCore import QProcess, Signal

from engine.events import Event, Reply, ReplyFailed, ReplyFinished, Started

from .worker import EngineWorker


class ServeWorker(EngineWorker):
    """``ask(request)`` sends one request and returns its id; ``replied`` streams its pieces
    and exactly one of ``reply_finished``/``reply_failed`` ends it. ``ready``: the model is
    loaded (the ``started`` signal said so). The worker's own end (a load that failed, a
    crash, a stop) comes through the EngineWorker signals."""

    replied = Signal(object)         # Reply: a piece of one reply
    reply_finished = Signal(object)  # ReplyFinished (result: GenerateReply; stopped or not)
    reply_failed = Signal(object)    # ReplyFailed: the request was refused or failed

    def __init__(self, argv: list[str], **kw):
        kw.setdefault("stop_grace_ms", 5000)  # a generate stops within a token; nothing to save
        super().__init__(argv, **kw)
        self.ready = False
        self.in_flight: set[str] = set()
        self.sent: list[dict] = []
        self._unsent: list[bytes] = []
        self._ids = itertools.count(1)
        self.proc.started.connect(self._send_unsent)

    def ask(self, request: dict) -> str:
        """Send ``request`` (an id is given when it has none); returns the id."""
        rid = str(request.get("id") or f"r{next(self._ids)}")
        request = {**request, "id": rid}
        self.in_flight.add(rid)
        self.sent.append(request)
        self.write_line(request)
        return rid

    def cancel(self, request_id: str) -> None:
        """Stop that reply (what was written stays); its reply_finished says ``stopped``."""
        if request_id in self.in_flight:
            self.write_line({"cancel": request_id})

    def write_line(self, obj: dict | str) -> None:
        data = ((obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)) + "\n"
                ).encode("utf-8")
        if self.proc.state() == QProcess.ProcessState.Running:
            self.proc.write(data)
        else:  # still starting: a write now would be lost
            self._unsent.append(data)

    def _send_unsent(self) -> None:
        for data in self._unsent:
            self.proc.write(data)
        self._unsent.clear()

    def dispatch(self, event: Event) -> None:
        if isinstance(event, Reply):
            self.replied.emit(event)
        elif isinstance(event, ReplyFinished):
            self.in_flight.discard(event.request)
            self.reply_finished.emit(event)
        elif isinstance(event, ReplyFailed):
            self.in_flight.discard(event.request)
            self.reply_failed.emit(event)
        else:
            if isinstance(event, Started):
                self.ready = True
            super().dispatch(event)
