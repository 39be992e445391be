"""Playground: chat with the base model or base + adapter, streamed from `tailor generate`;
side by side sends one prompt to both."""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel,
                               QLineEdit, QPlainTextEdit, QPushButton, QSpinBox, QSplitter,
                               QTextBrowser, QVBoxLayout, QWidget)

from engine import library

from .. import commands
from ..widgets import Banner, page_header

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
        self.jobs = []
        self.job_panes: dict[int, ChatPane] = {}
        self.generate_command = commands.generate_command  # tests give a replaying worker
        self._build()
        state.library_changed.connect(self.refresh_adapters)
        state.model_changed.connect(lambda _: self._titles())
        self.refresh_adapters()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        row = QHBoxLayout()
        row.addWidget(QLabel("Adapter"))
        self.adapter_box = QComboBox()
        self.adapter_box.setMinimumWidth(220)
        self.adapter_box.currentIndexChanged.connect(self._titles)
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

    def running_jobs(self) -> list:
        return [j for j in self.jobs if not j.done]

    def refresh(self) -> None:
        running = bool(self.running_jobs())
        self.stop_button.setEnabled(running)
        self.clear_button.setEnabled(not running and bool(self.left.turns or self.right.turns))

    def stop(self) -> None:
        """Stop the answers being written (what was written so far stays)."""
        for job in self.running_jobs():
            queued = job.state == "queued"
            self.state.queue.cancel(job)
            if queued:  # never started, so no worker signal will end its answer
                self.job_panes.pop(job.id).end(error="stopped")
        self.refresh()

    def clear(self) -> None:
        if self.running_jobs():
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
        self.banner.hide()
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
            self._generate(pane, prompt, ad)
        self.refresh()

    def _generate(self, pane: ChatPane, prompt: str, adapter: str) -> None:
        argv = self.generate_command(self.state.model, prompt, adapter=adapter,
                                         max_tokens=self.max_tokens.value(),
                                         system=self.system_edit.text().strip(),
                                         temperature=self.temperature.value())
        job = self.state.queue.submit(f"Generate ({adapter or 'base'})", argv, heavy=False)
        pane.begin(prompt)
        w = job.worker
        w.progressed.connect(lambda e: (p := stream_piece(e)) and pane.append(p))
        w.finished.connect(lambda e: pane.end((e.result or {}).get("text")))
        w.failed.connect(lambda e: pane.end(error=e.message))
        w.crashed.connect(lambda m, h: pane.end(error=m))
        w.cancelled.connect(lambda e: pane.end(error="stopped"))
        w.ended.connect(lambda _, j=job: (self.job_panes.pop(j.id, None), self.refresh()))
        self.job_panes[job.id] = pane
        self.jobs.append(job)
