"""Playground: chat with the base model or base + adapter, streamed from one
`tailor generate --serve` worker that keeps the base loaded for the life of the page (the
adapter is switched on and off per request, never reloading the base); side by side sends one
prompt to both."""
from __future__ import annotations

import html

from PySide6.QtCore import QCoreApplication, QEvent, Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QSplitter,
                               QTextBrowser, QVBoxLayout, QWidget)

from engine import library
from engine.events import TailorError

from .. import commands
from ..serve_worker import ServeWorker
from ..widgets import Banner, error_html, page_header

BASE = ""  # the adapter combo's data for "base model only"
BLANK_REPLY = "(the reply was empty or only blank space)"


def stream_piece(event) -> str | None:
    """The generated text an event carries, if any (`tailor generate` streams Progress events
    with stage "token" and the new text as the message)."""
    if getattr(event, "stage", "") in ("token", "text", "generate") and event.message:
        return event.message
    return None


class ChatPane(QWidget):
    """One conversation column: a title and the transcript."""

    def __init__(self, title: str, parent=None):
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.title = QLabel(f"<b>{html.escape(title)}</b>")
        lay.addWidget(self.title)
        self.view = QTextBrowser()
        self.view.setPlaceholderText("Write a message below; the answer streams in here.")
        lay.addWidget(self.view, 1)
        self.turns: list[tuple[str, str]] = []
        self.current = ""
        self.pieces = 0  # streamed pieces of the current answer

    def reset(self) -> None:
        self.turns, self.current, self.pieces = [], "", 0
        self._render()

    def set_title(self, title: str) -> None:
        self.title.setText(f"<b>{html.escape(title)}</b>")

    def begin(self, prompt: str) -> None:
        self.turns.append((prompt, ""))
        self.current = ""
        self.pieces = 0
        self._render()

    def append(self, text: str) -> None:
        self.pieces += 1
        self.current += text
        self.turns[-1] = (self.turns[-1][0], self.current)
        self._render()

    def end(self, text: str | None = None, error: str = "") -> None:
        if text is not None:
            self.current = text
        if error:
            self.current += f"\n[{error}]"
        elif not self.current.strip():
            self.current = BLANK_REPLY
        if self.turns:
            self.turns[-1] = (self.turns[-1][0], self.current)
        self._render()

    def text(self) -> str:
        return self.current

    def _render(self) -> None:
        parts = []
        for prompt, answer in self.turns:
            parts.append(f"<p><b>You</b><br>{html.escape(prompt)}</p>"
                         f"<p><b>Model</b><br>{html.escape(answer).replace(chr(10), '<br>')}</p>")
        self.view.setHtml("<hr>".join(parts))
        self.view.verticalScrollBar().setValue(self.view.verticalScrollBar().maximum())


class PlaygroundPage(QWidget):
    TITLE = "Playground"
    EXPLANATION = ("Try what you trained: chat with the base model or with your adapter, or "
                   "side by side to see the difference.")

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        # One worker per loaded base (its key: the base and how it is quantized); replies in
        # flight by request id.
        self.worker: ServeWorker | None = None
        self.worker_key: tuple | None = None
        self.workers_started = 0
        self.pending: dict[str, ChatPane] = {}
        self._request_ids = 0
        self._watching_window = False
        self.serve_command = commands.serve_command  # tests and benches give another argv
        self._build()
        state.library_changed.connect(self.refresh_adapters)
        state.model_changed.connect(lambda _: (self._titles(), self._retire_stale_worker()))
        state.queue.job_started.connect(self._on_job_started)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self.refresh_adapters()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        row = QHBoxLayout()
        row.addWidget(QLabel("Adapter"))
        self.adapter_box = QComboBox()
        self.adapter_box.setMinimumWidth(220)
        self.adapter_box.currentIndexChanged.connect(self._titles)
        self.adapter_box.currentIndexChanged.connect(self._retire_stale_worker)
        row.addWidget(self.adapter_box)
        self.side_by_side = QCheckBox("Side by side with the base model")
        self.side_by_side.setChecked(True)  # the difference is what one came to see
        self.side_by_side.toggled.connect(self._titles)
        row.addWidget(self.side_by_side)
        row.addStretch(1)
        row.addWidget(QLabel("Temperature"))
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setDecimals(2)
        self.temperature.setToolTip("0: always the most likely word (repeatable); higher: "
                                    "more varied answers")
        row.addWidget(self.temperature)
        row.addWidget(QLabel("Max tokens"))
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(256)
        row.addWidget(self.max_tokens)
        lay.addLayout(row)
        srow = QHBoxLayout()
        srow.addWidget(QLabel("System prompt"))
        self.system_edit = QLineEdit()
        self.system_edit.setPlaceholderText("optional: how the model should behave, e.g. "
                                            "“Answer in one sentence.”")
        srow.addWidget(self.system_edit, 1)
        lay.addLayout(srow)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.panes = QSplitter(Qt.Orientation.Horizontal)
        self.left = ChatPane("Base model")
        self.right = ChatPane("Adapter")
        self.panes.addWidget(self.left)
        self.panes.addWidget(self.right)
        lay.addWidget(self.panes, 1)
        prow = QHBoxLayout()
        self.prompt = QPlainTextEdit()
        self.prompt.setPlaceholderText("Write a message… (⌘/Ctrl+Enter sends)")
        self.prompt.setMaximumHeight(90)
        prow.addWidget(self.prompt, 1)
        buttons = QVBoxLayout()
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.clear_button = QPushButton("Clear")
        self.clear_button.clicked.connect(self.clear)
        for b in (self.send_button, self.stop_button, self.clear_button):
            buttons.addWidget(b)
        prow.addLayout(buttons)
        lay.addLayout(prow)
        QShortcut(QKeySequence("Ctrl+Return"), self.prompt, activated=self.send)
        self._titles()
        self.refresh()

    def busy(self) -> bool:
        """A reply is being written (or waits its turn)."""
        return bool(self.pending)

    def refresh(self) -> None:
        running = self.busy()
        self.stop_button.setEnabled(running)
        self.clear_button.setEnabled(not running and bool(self.left.turns or self.right.turns))

    def stop(self) -> None:
        """Stop the answers being written (what was written so far stays)."""
        if self.worker is not None:
            for rid in list(self.pending):
                self.worker.cancel(rid)
        self.refresh()

    def clear(self) -> None:
        if self.busy():
            return
        for pane in (self.left, self.right):
            pane.reset()
        self.refresh()

    def refresh_adapters(self) -> None:
        keep = self.adapter_box.currentData()
        self.adapter_box.blockSignals(True)
        self.adapter_box.clear()
        self.adapter_box.addItem("None (base model only)", BASE)
        ready = [a for a in library.list_adapters() if a.weights.exists()]
        for a in ready:
            self.adapter_box.addItem(a.name, a.name)
        if keep is None and ready:  # first fill: the newest adapter is what one wants to try
            newest = max(ready, key=lambda a: a.manifest.get("finished") or
                         a.manifest.get("created") or 0)
            keep = newest.name
        i = self.adapter_box.findData(keep)
        self.adapter_box.setCurrentIndex(max(i, 0))
        self.adapter_box.blockSignals(False)
        self._titles()
        self._retire_stale_worker()

    def select_adapter(self, name: str) -> None:
        self.refresh_adapters()
        i = self.adapter_box.findData(name)
        if i >= 0:
            self.adapter_box.setCurrentIndex(i)

    def _titles(self, *_) -> None:
        adapter = self.adapter_box.currentData()
        both = self.side_by_side.isChecked() and bool(adapter)
        self.right.setVisible(both)
        self.left.set_title("Base model" if not adapter or both else f"Adapter: {adapter}")
        self.right.set_title(f"Adapter: {adapter}")

    def send(self) -> None:
        prompt = self.prompt.toPlainText().strip()
        if not prompt:
            return
        adapter = self.adapter_box.currentData()
        if not adapter and not self.state.model:
            self.banner.show_message("warn", "Choose a base model (Model page) or an adapter.")
            return
        try:
            worker = self._worker_for(adapter)
        except TailorError as e:  # the adapter was deleted or renamed meanwhile
            self.banner.show_message("error", error_html(e.message, e.hint))
            self.refresh_adapters()
            return
        self.banner.hide()
        if not worker.ready:
            self.banner.show_message("info", "Loading the model… (only for the first message: "
                                             "it stays loaded for the next ones)")
        self.prompt.clear()
        both = self.side_by_side.isChecked() and bool(adapter)
        targets = [(self.left, "" if both else adapter)]
        if both:
            targets.append((self.right, adapter))
            # Turns asked in one column only are matched by a gap in the other, so each
            # message sits beside its counterpart.
            for pane, other in ((self.left, self.right), (self.right, self.left)):
                while len(pane.turns) < len(other.turns):
                    pane.turns.append((other.turns[len(pane.turns)][0],
                                       "(asked in the other column only)"))
                pane._render()
        for pane, ad in targets:
            self._ask(worker, pane, prompt, ad)
        self.refresh()

    def _ask(self, worker: ServeWorker, pane: ChatPane, prompt: str, adapter: str) -> None:
        self._request_ids += 1
        request = {"id": str(self._request_ids), "prompt": prompt, "adapter": adapter or None,
                   "max_tokens": self.max_tokens.value(),
                   "temperature": self.temperature.value()}
        system = self.system_edit.text().strip()
        if system:
            request["system"] = system
        pane.begin(prompt)
        self.pending[worker.ask(request)] = pane

    # -- the worker ------------------------------------------------------------------------

    def _wanted(self, adapter: str) -> tuple[tuple, list[str]]:
        """(key, argv) of the worker that answers for ``adapter`` ("" for the base model): one
        per base, as the adapter was trained on it (its quantization too)."""
        if adapter:
            info = library.get_adapter(adapter)
            quant = (info.manifest.get("settings") or {}).get("quantize_base") or None
            return (info.base_model or f"adapter:{adapter}", quant), \
                self.serve_command(adapter=adapter)
        return (str(self.state.model), None), self.serve_command(model=str(self.state.model))

    def _worker_for(self, adapter: str) -> ServeWorker:
        key, argv = self._wanted(adapter)
        if self.worker is not None and self.worker_key == key and self.worker.running:
            return self.worker
        self._retire()
        return self._start_worker(key, argv)

    def _start_worker(self, key: tuple, argv: list[str]) -> ServeWorker:
        w = ServeWorker(argv, name="generate", parent=self)
        w.replied.connect(lambda e, w=w: self._on_piece(w, e))
        w.reply_finished.connect(lambda e, w=w: self._on_reply_end(w, e.request, e.result))
        w.reply_failed.connect(lambda e, w=w: self._on_reply_failed(w, e))
        w.failed.connect(lambda e, w=w: self._on_worker_failed(w, e.message, e.hint))
        w.crashed.connect(lambda m, h, w=w: self._on_worker_crashed(w, m, h))
        w.ended.connect(lambda _, w=w: self._on_worker_ended(w))
        w.started.connect(lambda _, w=w: self._on_worker_ready(w))
        self.worker, self.worker_key = w, key
        self.workers_started += 1
        w.start()
        return w

    def _on_worker_ready(self, w: ServeWorker) -> None:
        if w is self.worker and self.banner.text().startswith("Loading the model"):
            self.banner.clear()

    def _on_job_started(self, job) -> None:
        """A training run (or another heavy job) needs the memory: an idle worker goes; the
        next message loads the model again."""
        if job.heavy and self.worker is not None and not self.busy():
            self._retire()
            self.banner.show_message("info", f"The Playground's model was unloaded to leave "
                                             f"the memory to “{job.title}”; it loads again "
                                             "with your next message.")

    def _on_piece(self, w: ServeWorker, event) -> None:
        pane = self.pending.get(event.request) if w is self.worker else None
        if pane is not None:
            pane.append(event.text)

    def _on_reply_end(self, w: ServeWorker, request_id: str, reply) -> None:
        pane = self.pending.pop(request_id, None) if w is self.worker else None
        if pane is not None:  # reply: the engine's GenerateReply
            pane.end(reply.text, error="stopped" if reply.stopped else "")
        self.refresh()

    def _on_reply_failed(self, w: ServeWorker, event) -> None:
        pane = self.pending.pop(event.request, None) if w is self.worker else None
        if pane is not None:
            pane.end(error=event.message)
            self.banner.show_message("error", error_html(event.message, event.hint))
        self.refresh()

    def _end_pending(self, error: str) -> None:
        for pane in self.pending.values():
            pane.end(error=error)
        self.pending.clear()
        self.refresh()

    def _on_worker_failed(self, w: ServeWorker, message: str, hint: str) -> None:
        """The worker could not load the model (or stopped with an error): said, and the next
        message tries again."""
        if w is not self.worker:
            return
        self.worker = self.worker_key = None
        self._end_pending(message)
        self.banner.show_message("error", error_html(message, hint))

    def _on_worker_crashed(self, w: ServeWorker, message: str, hint: str) -> None:
        """Killed or crashed: a worker that had loaded its model is started again at once
        (loading it again); one that never got that far waits for the next message."""
        if w is not self.worker:
            return
        key, argv, was_ready = self.worker_key, w.argv, w.ready
        self.worker = self.worker_key = None
        self._end_pending("the model worker stopped")
        if was_ready:
            self._start_worker(key, argv)
            self.banner.show_message("warn", error_html(
                f"The model worker stopped unexpectedly ({message})",
                "a new one is loading the model; send the message again"))
        else:
            self.banner.show_message("error", error_html(
                f"The model worker stopped before the model was loaded ({message})", hint))

    def _on_worker_ended(self, w: ServeWorker) -> None:
        if w is self.worker:  # (it ended on its own: a stop from outside, the end of input)
            self.worker = self.worker_key = None
            self._end_pending("stopped")
        w.deleteLater()

    def _retire(self) -> None:
        """Stop the current worker (its replies in flight end as stopped)."""
        w, self.worker, self.worker_key = self.worker, None, None
        self._end_pending("stopped")
        if w is not None and w.running:
            w.stop()

    def _retire_stale_worker(self, *_) -> None:
        """The model or adapter changed: a worker for another base is stopped now (its memory
        freed); the next message starts the right one."""
        if self.worker is None:
            return
        try:
            key = self._wanted(self.adapter_box.currentData() or "")[0]
        except TailorError:
            key = None
        if key != self.worker_key:
            self._retire()

    def shutdown(self) -> None:
        """The window closes or the app quits: the worker goes with it."""
        self._retire()

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._watching_window:  # (the window is known once the page is shown)
            self._watching_window = True
            self.window().installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Close and obj is self.window():
            # After the window decided: a close it refused (a running job) keeps the worker.
            QTimer.singleShot(0, lambda: None if self.window().isVisible() else self.shutdown())
        return super().eventFilter(obj, event)
