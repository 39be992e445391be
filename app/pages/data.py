"""Data: the dataset dropped or opened, checked by `tailor data check` in a worker: format,
problems (file, line, problem), statistics with a token-length histogram, split, and a preview
with the trained spans highlighted."""
from __future__ import annotations

import html
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QCheckBox, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QSplitter, QTableView, QTabWidget,
                               QTextBrowser, QVBoxLayout, QWidget)

from engine.results import DataReport, PreviewExample, Problem

from .. import commands
from ..estimate import human_tokens
from ..job_binding import bind_job
from ..widgets import (TRAIN_COLOR, Banner, RowTableModel, highlight_colors,
                       keep_tick_labels_inside, page_header, show_empty)


class ProblemTableModel(RowTableModel):
    """The report's problems as rows: file, line, problem."""

    FILE, LINE, PROBLEM = range(3)
    HEADERS = ("File", "Line", "Problem")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[Problem] = []

    def set_problems(self, problems: list[Problem]) -> None:
        self.beginResetModel()
        self.rows = list(problems)
        self.endResetModel()

    def row_items(self) -> list:
        return self.rows

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        p = self.rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            col = index.column()
            if col == self.FILE:
                return Path(p.file).name
            if col == self.LINE:
                line = p.line or ""
                return f"{line}:{p.column}" if line and p.column else str(line)
            return p.message if p.severity == "error" else f"(warning) {p.message}"
        if role == Qt.ItemDataRole.ToolTipRole:
            return str(p)  # file:line:column: message
        return None


def preview_html(preview: list[PreviewExample], palette: QPalette | None = None) -> str:
    """Rendered examples with the trained text highlighted (segments are (text, trained)),
    in the palette's colours: readable in light and dark mode."""
    palette = palette or QPalette()
    fg, bg = highlight_colors(palette)
    muted = palette.color(QPalette.ColorRole.PlaceholderText).name()
    parts = []
    for i, ex in enumerate(preview, 1):
        body = []
        for text, trained in ex.segments:
            t = html.escape(text)
            body.append(f"<span style='background-color:{bg.name()}; color:{fg.name()}'>{t}"
                        "</span>" if trained else t)
        parts.append(f"<p><b>Example {i}</b> <span style='color:{muted}'>"
                     f"({html.escape(ex.source)})</span></p>"
                     f"<pre style='white-space:pre-wrap'>{''.join(body)}</pre>")
    if not parts:
        return f"<p style='color:{muted}'>No preview.</p>"
    return (f"<p style='color:{muted}'>Highlighted text is what the model learns to write; "
            "the rest is context.</p>" + "<hr>".join(parts))


def check_argv(path: str, model: str) -> list[str]:
    """`tailor data check PATH --model M --preview 5`: the page shows five rendered examples."""
    return commands.data_check_command(path, model, preview=5)


class DataPage(QWidget):
    TITLE = "Data"
    EXPLANATION = ("Drop a JSONL, JSON, CSV or text file (or a folder) anywhere on the window. "
                   "Tailor checks every line and shows what the model will learn from.")

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.job = None
        # What the page shows is derived from these three in refresh():
        self.status = "none"   # none, no-model, checking, ok, failed
        self.report: DataReport | None = None
        self.error: tuple[str, str] | None = None
        self.check_command = check_argv  # tests give a replaying worker
        self._build()
        state.data_changed.connect(self.check)
        state.model_changed.connect(lambda _: self.check() if self.state.data else None)

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        row = QHBoxLayout()
        self.path_label = QLabel("No dataset yet: drop a file here, or open one.")
        self.path_label.setWordWrap(True)
        row.addWidget(self.path_label, 1)
        self.skip_box = QCheckBox("Skip bad lines")
        self.skip_box.setChecked(True)
        self.skip_box.setToolTip("train on the good examples and list the bad ones; unchecked, "
                                 "any bad line stops the run (strict mode)")
        self.skip_box.toggled.connect(lambda on: setattr(self.state, "skip_bad_lines", on))
        row.addWidget(self.skip_box)
        open_button = QPushButton("Open…")
        open_button.clicked.connect(self.open_dialog)
        row.addWidget(open_button)
        lay.addLayout(row)
        self.banner = Banner()
        self.banner.action_clicked.connect(lambda _: self.state.page_requested.emit("Train"))
        lay.addWidget(self.banner)

        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split, 1)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.summary = QFormLayout()
        self.fields: dict[str, QLabel] = {}
        for key, title in (("format", "Format"), ("counts", "Examples"), ("split", "Split"),
                           ("tokens", "Tokens"), ("lengths", "Length (tokens)"),
                           ("cleaning", "Cleaning")):
            v = QLabel("–")
            v.setWordWrap(True)
            v.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.summary.addRow(title, v)
            self.fields[key] = v
        ll.addLayout(self.summary)
        self.histogram = pg.PlotWidget()
        self.histogram.setMinimumHeight(160)
        self.histogram.setLabel("bottom", "example length (tokens)")
        self.histogram.setLabel("left", "examples")
        self.histogram.setMouseEnabled(x=False, y=False)
        self.histogram.setBackground(self.palette().color(self.backgroundRole()))
        keep_tick_labels_inside(self.histogram)
        show_empty(self.histogram, True)
        ll.addWidget(self.histogram, 1)
        split.addWidget(left)

        self.tabs = QTabWidget()
        self.problems = ProblemTableModel(self)
        self.problem_view = QTableView()
        self.problem_view.setModel(self.problems)
        self.problem_view.horizontalHeader().setSectionResizeMode(
            ProblemTableModel.PROBLEM, QHeaderView.ResizeMode.Stretch)
        self.problem_view.verticalHeader().hide()
        self.preview = QTextBrowser()
        self.tabs.addTab(self.preview, "Preview")
        self.tabs.addTab(self.problem_view, "Problems")
        split.addWidget(self.tabs)
        split.setSizes([420, 700])

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a dataset", "",
                                              "Datasets (*.jsonl *.json *.csv *.tsv *.txt);;"
                                              "All files (*)")
        if path:
            self.state.set_data(path)

    def check(self, *_) -> None:
        """Run `tailor data check` on the current dataset (needs a base model's tokenizer).
        The previous dataset's counts, preview and problems go at once, not when it ends."""
        path = self.state.data
        self.report, self.error = None, None
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)
        self.job = None
        if not path:
            self.status = "none"
        elif not self.state.model:
            self.status = "no-model"
        else:
            argv = self.check_command(path, self.state.model)
            self.job = job = self.state.queue.submit(f"Check {Path(path).name}", argv,
                                                     heavy=False)
            # the banner is derived from the status in refresh(), so no banner here
            bind_job(job, lambda report, j=job: self._on_report(j, report),
                     on_failure=lambda message, hint, _, j=job: self._on_error(j, message, hint))
            self.status = "checking"
            self.state.set_data_status("checking")
        self.refresh()

    def _on_error(self, job, message: str, hint: str) -> None:
        if job is not self.job:
            return
        self.status, self.error, self.report = "failed", (message, hint), None
        self.state.set_data_status("failed", message)
        self.refresh()

    def _on_report(self, job, report: DataReport | dict | None) -> None:
        """Show the engine's DataReport (a version-1 dict is read into one)."""
        if job is not self.job:
            return
        self.report = report = DataReport.coerce(report)
        if not report.train_examples:
            self.status = "failed"
            self.error = ("no usable training examples in this dataset",
                          "see Problems for what is wrong with each line")
            self.state.set_data_status("failed", self.error[0])
        else:
            self.status, self.error = "ok", None
            self.state.set_report(report)
            self.state.set_data_status("ok")
        self.refresh()

    def show_report(self, r: DataReport | dict) -> None:
        """Show a report as if a check had just produced it (tests, the first-run sample)."""
        self.job = None
        self._on_report(None, r)

    def refresh(self) -> None:
        """Every widget from (status, report, error): nothing is left from an earlier file."""
        path = self.state.data
        if path:
            self.path_label.setText(f"<b>{html.escape(Path(path).name)}</b>  "
                                    f"<span style='color:{self._muted()}'>"
                                    f"{html.escape(str(Path(path).parent))}</span>")
        else:
            self.path_label.setText("No dataset yet: drop a file here, or open one.")
        r = self.report
        self._show_summary(r)
        problems = r.problems if r is not None else []
        self.problems.set_problems(problems)
        self.tabs.setTabText(1, f"Problems ({len(problems)})" if problems else "Problems")
        self.preview.setHtml(preview_html(r.preview, self.palette())
                             if self.status == "ok" and r is not None else "")
        name = html.escape(Path(path).name) if path else ""
        if self.status == "none":
            self.banner.clear()
        elif self.status == "no-model":
            self.banner.show_message("info", "Choose a base model (Model page): the check uses "
                                     "its tokenizer and chat template.")
        elif self.status == "checking":
            self.banner.show_message("info", f"Checking {name}…")
        elif self.status == "failed":
            message, hint = self.error or ("the check failed", "")
            self.banner.show_message("error", f"{name} cannot be used: {html.escape(message)}"
                                     + (f"<br>{html.escape(hint)}" if hint else ""))
            self.tabs.setCurrentIndex(1 if problems else 0)
        elif r is not None and r.errors:
            self.banner.show_message("warn", f"{len(r.errors)} bad line(s) will be skipped; see "
                                     "Problems for the file and line of each.")
            self.tabs.setCurrentIndex(1)
        else:
            self.banner.show_message("ok", f"Ready: {r.train_examples if r else 0} training "
                                     "examples. Next: the Train page.", [("train", "Go to Train")])
            self.tabs.setCurrentIndex(0)

    def _muted(self) -> str:
        return self.palette().color(QPalette.ColorRole.PlaceholderText).name()

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        if ev.type() == ev.Type.PaletteChange and hasattr(self, "banner"):
            self.histogram.setBackground(self.palette().color(self.backgroundRole()))
            self.refresh()  # the preview's colours come from the palette

    def _show_summary(self, r: DataReport | None) -> None:
        self.histogram.clear()
        show_empty(self.histogram, True)
        if r is None:
            for v in self.fields.values():
                v.setText("–")
            return
        st = r.train_stats
        self.fields["format"].setText(f"{r.format or '?'} · schema {r.schema or '?'} · "
                                      f"{r.encoding or '?'}")
        self.fields["counts"].setText(f"{r.good} good, {r.skipped} skipped of {r.records} read")
        self.fields["split"].setText(f"{r.train_examples} train · {r.valid_examples} validation"
                                     + (f" · {r.test_examples} test" if r.test_examples else ""))
        self.fields["tokens"].setText(f"{human_tokens(st.tokens)} "
                                      f"({human_tokens(st.trained_tokens)} trained)")
        self.fields["lengths"].setText(
            f"min {human_tokens(st.length_min)}, median {human_tokens(st.length_median)}, "
            f"95% {human_tokens(st.length_p95)}, max {human_tokens(st.length_max)}")
        self.fields["cleaning"].setText(f"{r.duplicates} duplicates removed, "
                                        f"{r.truncated} truncated, "
                                        f"{r.dropped_too_long} dropped as too long, "
                                        f"{r.leakage} leaked into validation")
        edges, counts = st.histogram_edges, st.histogram_counts
        if counts and len(edges) >= len(counts) + 1:
            width = edges[1] - edges[0]
            self.histogram.addItem(pg.BarGraphItem(
                x=[e + width / 2 for e in edges[:-1]], height=counts, width=width * 0.9,
                brush=TRAIN_COLOR))
            show_empty(self.histogram, False)
