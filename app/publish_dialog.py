"""Publish: the Library's selected adapter to the Hugging Face Hub (`tailor push`). The user
first sees the exact list of files (`tailor push --dry-run`); only then is Publish enabled, and
any change of the options asks for the list again. The push runs with progress and Cancel."""
from __future__ import annotations

import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit,
                               QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout)

from engine.results import PushPlan, PushResult

from . import commands
from .job_binding import bind_job
from .widgets import Banner

GGUF_CHOICES = ["q4_k_m", "q5_k_m", "q8_0", "f16"]


def push_command(adapter: str, repo: str, *, private: bool = False, ggufs=(),
                 peft: bool = False, dry_run: bool = False, python: str | None = None
                 ) -> list[str]:
    """`tailor push --adapter A --repo R [--private] [--gguf T ...] [--peft] --dry-run|--yes`."""
    args = ["--adapter", adapter, "--repo", repo]
    args += ["--private"] if private else []
    args += ["--gguf", *ggufs] if ggufs else []
    args += ["--peft"] if peft else []
    args += ["--dry-run"] if dry_run else ["--yes"]
    return commands.engine_argv("push", *args, python=python)


def plan_text(plan: PushPlan) -> str:
    from engine.sizes import format_bytes

    lines = [f"{'Private' if plan.private else 'Public'} repository {plan.repo}:"]
    for f in plan.files:
        size = format_bytes(f.size) if f.size is not None else "written before the upload"
        lines.append(f"  {f.path}  ({size}): {f.what}")
    return "\n".join(lines)


class PublishDialog(QDialog):
    """Options, the file list, then Publish."""

    published = Signal(str)  # the repository's address

    def __init__(self, state, adapter: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Publish {adapter}")
        self.state = state
        self.adapter = adapter
        self.job = None
        self.plan: PushPlan | None = None
        self.plan_argv: list[str] | None = None
        self._build()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel("Upload this adapter, a model card (settings, dataset name and "
                             "sha256, never the data) and its loss curve to the Hugging Face "
                             "Hub, with the login of `hf auth login`."))
        form = QFormLayout()
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("OWNER/NAME")
        self.repo_edit.setToolTip("the Hub model repository (created when it does not exist)")
        form.addRow("Repository", self.repo_edit)
        self.private_box = QCheckBox("Private repository")
        form.addRow("", self.private_box)
        self.gguf_boxes = {q: QCheckBox(q.upper()) for q in GGUF_CHOICES}
        row = QHBoxLayout()
        for box in self.gguf_boxes.values():
            box.setToolTip("also write, verify in llama.cpp and upload the fused model as "
                           "this GGUF type (for llama.cpp, Ollama, LM Studio)")
            row.addWidget(box)
        form.addRow("GGUF files", row)
        self.peft_box = QCheckBox("Also in PEFT's format (transformers, vLLM)")
        form.addRow("", self.peft_box)
        lay.addLayout(form)
        for w in (self.repo_edit.textChanged, self.private_box.toggled, self.peft_box.toggled,
                  *(b.toggled for b in self.gguf_boxes.values())):
            w.connect(self._options_changed)
        self.files_view = QPlainTextEdit()
        self.files_view.setReadOnly(True)
        self.files_view.setPlaceholderText("Show the files first: nothing is uploaded before "
                                           "you have seen the list.")
        lay.addWidget(self.files_view, 1)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.progress = QProgressBar()
        self.progress.hide()
        lay.addWidget(self.progress)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        self.list_button = QPushButton("Show files")
        self.list_button.clicked.connect(lambda: self.show_files())
        self.publish_button = QPushButton("Publish")
        self.publish_button.setEnabled(False)
        self.publish_button.clicked.connect(lambda: self.publish())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        for b in (self.cancel_button, self.list_button, self.publish_button):
            buttons.addWidget(b)
        lay.addLayout(buttons)

    def options(self) -> dict:
        return {"private": self.private_box.isChecked(), "peft": self.peft_box.isChecked(),
                "ggufs": [q for q, b in self.gguf_boxes.items() if b.isChecked()]}

    def argv(self, dry_run: bool) -> list[str]:
        return push_command(self.adapter, self.repo_edit.text().strip(), dry_run=dry_run,
                            **self.options())

    def _options_changed(self, *_) -> None:
        """A list shown for other options confirms nothing: ask for it again."""
        self.plan = None
        self.publish_button.setEnabled(False)
        self.publish_button.setText("Publish")
        if self.files_view.toPlainText():
            self.files_view.setPlainText("")
            self.banner.show_message("info", "The options changed: show the files again.")

    def show_files(self) -> None:
        if not self.repo_edit.text().strip():
            self.banner.show_message("warn", "Give the repository as OWNER/NAME.")
            return
        self.plan_argv = self.argv(dry_run=True)
        self.job = job = self.state.queue.submit(f"Publish {self.adapter} (files)",
                                                 self.plan_argv, heavy=False)
        bind_job(job, self._on_plan, banner=self.banner, disable=[self.list_button],
                 running="Listing the files…", failed="Cannot publish")

    def _on_plan(self, result) -> None:
        self.plan = plan = PushPlan.coerce(result)
        self.files_view.setPlainText(plan_text(plan))
        self.publish_button.setText(f"Publish {len(plan.files)} files to {plan.repo}")
        self.publish_button.setEnabled(True)
        self.banner.show_message("info", "Check the files above, then Publish to upload "
                                 "them.")

    def publish(self) -> None:
        if self.plan is None:  # (the button is disabled then; a direct call is refused too)
            self.banner.show_message("warn", "Show the files first.")
            return
        self.job = job = self.state.queue.submit(f"Publish {self.adapter}",
                                                 self.argv(dry_run=False))
        bind_job(job, self._on_pushed, banner=self.banner, progress=self.progress,
                 disable=[self.publish_button, self.list_button],
                 running=f"Publishing to {html.escape(self.plan.repo)}…",
                 failed="Publishing failed", cancelled="Publishing stopped; the repository "
                 "has no new commit (publish again to resume).")

    def cancel(self) -> None:
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)
        else:
            self.reject()

    def _on_pushed(self, result) -> None:
        r = PushResult.coerce(result)
        self.banner.show_message("ok", f"Published {len(r.files)} files: "
                                 f"<a href='{html.escape(r.url)}'>{html.escape(r.url)}</a>")
        self.cancel_button.setText("Close")
        self.published.emit(r.url)
