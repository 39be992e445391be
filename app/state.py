"""What the pages share: the chosen base model, the dataset and its report, the library.

Pages receive this object (no global main window); they listen to its signals.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from .jobs import JobQueue


class AppState(QObject):
    model_changed = Signal(str)        # a local folder or a Hugging Face repo id
    data_changed = Signal(str)         # dataset file or folder
    report_changed = Signal(object)    # the data report dict (``DataReport.to_dict()``)
    data_status_changed = Signal(str)  # "", "checking", "ok" or "failed" (see data_problem)
    library_changed = Signal()         # an adapter was added, renamed, deleted, or finished
    page_requested = Signal(str)       # a page asks the window to show another page
    adapter_requested = Signal(str, str)  # (page, adapter name): "try"/"export"/"resume"

    def __init__(self, queue: JobQueue | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.queue = queue or JobQueue(self)
        self.model = ""
        self.data = ""
        self.report: dict | None = None
        self.data_status = ""   # the dataset's check: "", "checking", "ok", "failed"
        self.data_problem = ""  # why it failed, one sentence
        self.skip_bad_lines = True

    def set_model(self, model: str) -> None:
        model = str(model).strip()
        if model != self.model:
            self.model = model
            self.model_changed.emit(model)

    def set_data(self, path: str | Path) -> None:
        path = str(path)
        if path != self.data:
            self.data = path
            self.report = None
            self.data_status, self.data_problem = "", ""
            self.data_changed.emit(path)

    def set_report(self, report: dict | None) -> None:
        self.report = report
        self.report_changed.emit(report)

    def set_data_status(self, status: str, problem: str = "") -> None:
        """What the dataset's check concluded; the Train page enables Start from it."""
        self.data_status, self.data_problem = status, problem
        if status != "ok":
            self.report = None
        self.data_status_changed.emit(status)

    @property
    def model_folder(self) -> Path | None:
        p = Path(self.model).expanduser() if self.model else None
        return p if p is not None and p.is_dir() else None
