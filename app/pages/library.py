"""Library: every adapter as a row; details (settings, loss curve, record); rename, duplicate,
delete (confirmed), resume, try, export; a second run's curves overlaid to compare."""
from __future__ import annotations

import datetime as dt
import html
import os
import socket
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QSortFilterProxyModel, Qt
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView,
                               QInputDialog, QLabel, QPushButton, QSplitter,
                               QTableView, QTabWidget, QTextBrowser, QVBoxLayout, QWidget)

from engine import library
from engine.events import TailorError

from ..evaluate_view import EvaluationView
from ..history import LossHistory
from ..merge_dialog import MergeDialog, lineage_html, merge_button
from ..widgets import (Banner, LossChart, MetricChart, RowTableModel, ask, copy_text,
                       error_html, page_header, reveal_in_file_manager)


def effective_status(manifest: dict) -> str:
    """The manifest's status, except that a "running" run whose process is gone (killed, out
    of memory, the Mac restarted) is "interrupted": resumable from its last checkpoint."""
    status = manifest.get("status", "unknown")
    if status != "running" or not manifest.get("pid"):
        return status
    if manifest.get("host") and manifest.get("host") != socket.gethostname():
        return status  # another machine's run: we cannot tell
    try:
        os.kill(int(manifest["pid"]), 0)
    except ProcessLookupError:
        return "interrupted"
    except (PermissionError, OSError, ValueError):
        pass
    return status


def reproduce_command(name: str, manifest: dict) -> str:
    """`tailor train …` that trains this run again (its model, data and settings)."""
    import shlex

    from .. import commands
    base = manifest.get("base_model") or {}
    model = base.get("given") or base.get("repo_id") or base.get("path") or ""
    data = (manifest.get("dataset") or {}).get("path") or ""
    argv = commands.train_command(model, data, f"{name}-again",
                                  manifest.get("settings") or {})
    return shlex.join(["tailor", *argv[3:-3]])  # not `python -m engine`, not the events flags


def _value(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)


# Timestamps in a manifest, shown as dates.
_TIMES = ("created", "finished", "updated", "started")


def record_html(manifest: dict) -> str:
    """The run record as a readable table (nested fields as "base model › path"); the loss
    history is the chart's, not a wall of numbers."""
    rows = []

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix} › {k}" if prefix else str(k), v)
        else:
            key = prefix.split(" › ")[-1]
            shown = _when(value) if key in _TIMES and isinstance(value, (int, float)) else \
                _value(value)
            rows.append(f"<tr><td><b>{html.escape(prefix.replace('_', ' '))}</b></td>"
                        f"<td>{html.escape(shown)}</td></tr>")

    walk("", {k: v for k, v in manifest.items()
              if k not in ("loss_history", "metrics_history", "settings")})
    return f"<table cellspacing=4>{''.join(rows)}</table>"


def _when(ts) -> str:
    try:
        return dt.datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError, OSError):
        return ""


class AdapterTableModel(RowTableModel):
    """Adapters in the library, one per row (tested without a view)."""

    NAME, BASE, DATASET, DATE, STEPS, BEST_VAL, STATUS = range(7)
    HEADERS = ("Name", "Base model", "Dataset", "Date", "Steps", "Best val loss", "Status")

    def __init__(self, lister: Callable[[], list] = library.list_adapters, parent=None):
        super().__init__(parent)
        self.lister = lister
        self.adapters: list[library.AdapterInfo] = []

    def refresh(self) -> None:
        self.beginResetModel()
        try:
            self.adapters = self.lister()
        except (OSError, TailorError):
            self.adapters = []
        self.endResetModel()

    def row_items(self) -> list:
        return self.adapters

    def value(self, row: int, col: int):
        """The raw value of a cell (what sorting uses)."""
        a = self.adapters[row]
        m = a.manifest
        base = m.get("base_model") or {}
        if col == self.NAME:
            return a.name
        if col == self.BASE:
            return base.get("repo_id") or Path(base.get("path") or "").name
        if col == self.DATASET:
            return Path((m.get("dataset") or {}).get("path") or "").name
        if col == self.DATE:
            return m.get("finished") or m.get("created") or 0
        if col == self.STEPS:
            return m.get("steps") or 0
        if col == self.BEST_VAL:
            return m.get("best_val_loss")
        return effective_status(m)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        v = self.value(index.row(), index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            if index.column() == self.DATE:
                return _when(v)
            if index.column() == self.BEST_VAL:
                return "" if v is None else f"{float(v):.4f}"
            return str(v)
        if role == Qt.ItemDataRole.UserRole:
            return v if v is not None else float("inf")
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() in (self.STEPS,
                                                                            self.BEST_VAL):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def row_of(self, name: str) -> int:
        return next((i for i, a in enumerate(self.adapters) if a.name == name), -1)


class LibraryPage(QWidget):
    TITLE = "Library"
    EXPLANATION = ("Every adapter you trained, with its settings and loss curve. Select one "
                   "to try it, export it, or compare it with another.")

    def __init__(self, state, confirm: Callable[[str, str, str], bool] | None = None,
                 ask_text: Callable[[str, str, str], str | None] | None = None, parent=None):
        super().__init__(parent)
        self.state = state
        self.confirm = confirm or self._confirm_dialog
        self.ask_text = ask_text or self._text_dialog
        self.reveal = reveal_in_file_manager  # tests record it
        self.model = AdapterTableModel(parent=self)
        self.history = LossHistory()
        self.compare_histories = [LossHistory(), LossHistory()]
        self._build()
        state.library_changed.connect(self.refresh)
        self.refresh()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        self.banner = Banner()
        lay.addWidget(self.banner)
        split = QSplitter(Qt.Orientation.Vertical)
        lay.addWidget(split, 1)
        split.addWidget(self._build_table())
        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addLayout(self._build_action_row())
        dl.addLayout(self._build_compare_row())
        dl.addWidget(self._build_tabs(), 1)
        split.addWidget(detail)
        split.setSizes([260, 420])
        self._enable(None)

    def _build_table(self) -> QTableView:
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(Qt.ItemDataRole.UserRole)
        self.view = QTableView()
        self.view.setModel(self.proxy)
        self.view.setSortingEnabled(True)
        self.view.sortByColumn(AdapterTableModel.DATE, Qt.SortOrder.DescendingOrder)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        # several rows (Ctrl/Shift-click) for Merge; the details show the first
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        self.view.doubleClicked.connect(lambda _: self._act("try"))
        return self.view

    def _build_action_row(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.buttons: dict[str, QPushButton] = {}
        for key, label in (("try", "Try"), ("export", "Export…"), ("resume", "Resume"),
                           ("rename", "Rename…"), ("duplicate", "Duplicate…"),
                           ("delete", "Delete…"), ("reveal", "Show in Finder"),
                           ("copy", "Copy command")):
            b = QPushButton(label)
            b.clicked.connect(lambda _=False, k=key: self._act(k))
            buttons.addWidget(b)
            self.buttons[key] = b
        buttons.addStretch(1)
        return buttons

    def _build_compare_row(self) -> QHBoxLayout:
        # Compare on its own row: beside eight buttons it was cut off at 1024 px.
        buttons = QHBoxLayout()
        buttons.addWidget(QLabel("Compare with"))
        # Up to two other runs overlaid (the chart has a colour for each).
        self.compare_boxes: list[QComboBox] = []
        for i in range(2):
            if i:
                buttons.addWidget(QLabel("and"))
            box = QComboBox()
            box.setMinimumWidth(140)
            box.currentIndexChanged.connect(self._on_compare)
            buttons.addWidget(box)
            self.compare_boxes.append(box)
        self.compare_box = self.compare_boxes[0]
        buttons.addStretch(1)
        self.merge_button = merge_button(self._merge)  # enabled with two or more selected
        buttons.addWidget(self.merge_button)
        self.publish_button = QPushButton("Publish…")  # to the Hugging Face Hub (issue 23)
        self.publish_button.setToolTip("upload the selected adapter, its model card and "
                                       "GGUFs to the Hugging Face Hub (the files are listed "
                                       "before anything is sent)")
        self.publish_button.clicked.connect(self._publish)
        self.publish_button.setEnabled(False)
        buttons.addWidget(self.publish_button)
        return buttons

    def _build_tabs(self) -> QTabWidget:
        self.tabs = QTabWidget()
        self.chart = LossChart(self.history, grid=True)
        self.settings_view = QTextBrowser()
        self.record_view = QTextBrowser()
        self.tabs.addTab(self.chart, "Loss curve")
        # a DPO/ORPO run's reward accuracy and margin (manifest metrics_history; Train page's)
        self.reward_charts = [MetricChart("reward_accuracy", "reward accuracy"),
                              MetricChart("reward_margin", "reward margin")]
        self.rewards = QWidget()
        rewards_layout = QVBoxLayout(self.rewards)
        for chart in self.reward_charts:
            rewards_layout.addWidget(chart)
        self.tabs.addTab(self.rewards, "Rewards")
        self.tabs.setTabVisible(self.tabs.indexOf(self.rewards), False)  # SFT runs have none
        self.tabs.addTab(self.settings_view, "Settings")
        self.tabs.addTab(self.record_view, "Record")
        self.eval_view = EvaluationView(self.state)  # the latest evaluation, and Evaluate
        self.tabs.addTab(self.eval_view, "Evaluate")
        return self.tabs

    # -- data --------------------------------------------------------------------------------

    def refresh(self) -> None:
        keep = self.selected_name()
        self.model.refresh()
        for c in range(self.model.columnCount()):
            self.view.resizeColumnToContents(c)
        if keep:
            self.select(keep)
        elif self.model.adapters:
            self.view.selectRow(0)
        else:
            self._show(None)

    def select(self, name: str) -> bool:
        row = self.model.row_of(name)
        if row < 0:
            return False
        idx = self.proxy.mapFromSource(self.model.index(row, 0))
        self.view.selectRow(idx.row())
        return True

    def selected(self) -> library.AdapterInfo | None:
        rows = self.view.selectionModel().selectedRows() if self.view.selectionModel() else []
        if not rows:
            return None
        return self.model.adapters[self.proxy.mapToSource(rows[0]).row()]

    def selected_name(self) -> str:
        a = self.selected()
        return a.name if a else ""

    def selected_names(self) -> list[str]:
        """Every selected adapter, in the table's order."""
        rows = self.view.selectionModel().selectedRows() if self.view.selectionModel() else []
        return [self.model.adapters[self.proxy.mapToSource(r).row()].name
                for r in sorted(rows, key=lambda r: r.row())]

    def _on_selection(self, *_) -> None:
        self._show(self.selected())
        self.merge_button.setEnabled(len(self.selected_names()) >= 2)
        a = self.selected()
        self.publish_button.setEnabled(a is not None and a.weights.exists())

    def _enable(self, a) -> None:
        status = effective_status(a.manifest) if a is not None else ""
        running = status == "running"
        for key, b in self.buttons.items():
            b.setEnabled(a is not None and not (running and key in ("rename", "delete",
                                                                      "resume")))
        if a is not None:
            self.buttons["resume"].setEnabled(status in ("cancelled", "failed", "interrupted"))
            self.buttons["try"].setEnabled(a.weights.exists())
            self.buttons["export"].setEnabled(a.weights.exists())

    def _show(self, a) -> None:
        self._enable(a)
        self.eval_view.show_adapter(a)
        if a is None:
            self.history.clear()
            self.tabs.setTabVisible(self.tabs.indexOf(self.rewards), False)
            self.settings_view.setHtml("<p style='color:gray'>No adapter selected. Train one on "
                                       "the Train page.</p>")
            self.record_view.clear()
            return
        m = a.manifest
        self.history.load(m.get("loss_history"))
        for chart in self.reward_charts:
            chart.load(m.get("metrics_history"))
        self.tabs.setTabVisible(self.tabs.indexOf(self.rewards), bool(m.get("metrics_history")))
        self._fill_compare(a.name)
        from .train import _label  # the Train form's own names for the settings
        rows = "".join(f"<tr><td><b>{html.escape(_label(k))}</b></td>"
                       f"<td>{html.escape(_value(v))}</td></tr>"
                       for k, v in (m.get("settings") or {}).items())
        base = m.get("base_model") or {}
        ds = m.get("dataset") or {}
        self.settings_view.setHtml(
            f"<h3>{a.name}</h3><p>Status: <b>{effective_status(m)}</b> · base "
            f"{base.get('repo_id') or base.get('path', '')} ({base.get('architecture', '?')}) · "
            f"dataset {ds.get('path', '')}</p>{lineage_html(m)}"
            f"<table cellspacing=6>{rows}</table>")
        self.record_view.setHtml(record_html(m))

    def _fill_compare(self, selected: str) -> None:
        """Every other run (a run compared with itself shows nothing new)."""
        changed = False
        for box in self.compare_boxes:
            keep = box.currentData()
            box.blockSignals(True)
            box.clear()
            box.addItem("—", "")
            for a in self.model.adapters:
                if a.name != selected:
                    box.addItem(a.name, a.name)
            box.setCurrentIndex(max(box.findData(keep), 0))
            box.blockSignals(False)
            changed |= box.currentData() != keep
        if changed:
            self._on_compare()

    def _on_compare(self, *_) -> None:
        chosen = []
        for box, history in zip(self.compare_boxes, self.compare_histories):
            name = box.currentData()
            if not name or name in (n for n, _ in chosen):
                continue
            try:
                history.load(library.get_adapter(name).manifest.get("loss_history"))
            except TailorError:
                continue
            chosen.append((name, history))
        self.chart.set_compare(chosen)
        if chosen:
            self.tabs.setCurrentWidget(self.chart)

    # -- actions -----------------------------------------------------------------------------

    def _act(self, key: str) -> None:
        a = self.selected()
        if a is None:
            return
        try:
            if key in ("try", "export", "resume"):
                self.state.adapter_requested.emit(key, a.name)
            elif key == "reveal":
                self.reveal(a.path)
            elif key == "copy":
                copy_text(reproduce_command(a.name, a.manifest))
                self.banner.show_message("ok", "Copied the command that trains this run again.")
            elif key == "rename":
                new = self.ask_text("Rename adapter", "New name:", a.name)
                if new and new != a.name:
                    library.rename_adapter(a.name, new)
                    self._changed(new, f"Renamed “{a.name}” to “{new}”.")
            elif key == "duplicate":
                new = self.ask_text("Duplicate adapter", "Name of the copy:", f"{a.name}-copy")
                if new:
                    library.duplicate_adapter(a.name, new)
                    self._changed(new, f"Copied “{a.name}” to “{new}”.")
            elif key == "delete":
                if self.confirm("Move adapter to Trash",
                                f"Move “{a.name}” and its checkpoints to the Trash? You can "
                                "restore it from the Trash until it is emptied.",
                                "Move to Trash"):
                    gone = library.delete_adapter(a.name)
                    where = f" ({gone.trash})" if gone.trash else ""
                    self._changed("", f"Moved “{a.name}” to the Trash{where}; it can be "
                                      "restored from the Trash.")
        except TailorError as e:
            self.banner.show_message("error", error_html(e.message, e.hint))

    def _merge(self) -> None:
        """Open the Merge dialog for the selected adapters (kept as ``merge_dialog``)."""
        names = self.selected_names()
        if len(names) < 2:
            self.banner.show_message("warn", "Select two or more adapters to merge "
                                     "(Ctrl- or Shift-click).")
            return
        self.merge_dialog = MergeDialog(self.state, names, self)
        self.merge_dialog.merged.connect(
            lambda name: self._changed(name, f"Merged {', '.join(names)} into “{name}”."))
        self.merge_dialog.show()

    def _publish(self) -> None:
        """Open the Publish dialog for the selected adapter (kept as ``publish_dialog``)."""
        from ..publish_dialog import PublishDialog

        name = self.selected_name()
        if name:
            self.publish_dialog = PublishDialog(self.state, name, self)
            self.publish_dialog.show()

    def _changed(self, select: str, message: str) -> None:
        self.state.library_changed.emit()
        if select:
            self.select(select)
        self.banner.show_message("ok", message)

    def _confirm_dialog(self, title: str, text: str, verb: str) -> bool:
        return ask(self, title, text, verb)

    def _text_dialog(self, title: str, label: str, default: str) -> str | None:
        text, ok = QInputDialog.getText(self, title, label, text=default)
        return text.strip() if ok else None
