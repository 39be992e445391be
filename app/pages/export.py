"""Export: an adapter and a GGUF type (the engine's table, with the expected size of each for
this adapter's model), an importance matrix, the verification result and the types already
exported for the adapter with their measured quality (size, KL divergence, perplexity, time),
and "Send to Ollama" (name, optional system prompt), with Ollama's status; without Ollama, the
Modelfile folder and the command to run."""
from __future__ import annotations

import html
from pathlib import Path

from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QStyle, QStyleOptionComboBox, QStylePainter
from PySide6.QtWidgets import (QCheckBox, QComboBox, QFileDialog, QFormLayout, QGroupBox,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                               QPushButton, QSizePolicy, QTableWidget, QTableWidgetItem,
                               QTabWidget, QVBoxLayout, QWidget, QHeaderView)

from engine import library, paths
from engine.adapter_exports import listed_export_records
from engine.events import ErrorCode
from engine.export.quant_types import QUANT_TYPES, imatrix_warning
from engine.results import ExportResult, HandoffResult, OllamaStatus, QuantTypeList

from .. import commands
from ..estimate import estimate, human_bytes, read_model_config
from ..job_binding import bind_job, failure_html
from ..widgets import Banner, ask, copy_text, page_header, reveal_in_file_manager

# The engine's one type table (engine/export/quant_types.py): `tailor export --help` and
# `--list-types` list the same types, bits per weight and use, in the same order.
QUANTS = [(q.name, q.bits_per_weight, q.use) for q in QUANT_TYPES]
DEFAULT_QUANT = "q4_k_m"

# The importance-matrix choice, as `tailor export --imatrix` takes it (None: no matrix).
IMATRIX_NONE, IMATRIX_AUTO, IMATRIX_CHOOSE = "", "auto", "choose"
IMATRIX_TOOLTIP = ("An importance matrix tells the quantizer which weights matter most to the "
                   "model's output, measured by running the model over text. “From the training "
                   "data” computes it over this adapter's own data (and saves it beside the "
                   "GGUF); a file is one llama.cpp's llama-imatrix wrote. It matters most for "
                   "Q2_K and Q3_K.")
EXPORTED_COLUMNS = ["Type", "Size", "KL divergence", "Perplexity", "Time", "File"]
EXPORTED_TIPS = [
    "the GGUF file type", "the file's size",
    "mean KL divergence of the file's next-token distribution (run in llama.cpp) from the "
    "full-precision model (MLX, float32), in nats per token, on the adapter's held-out "
    "examples: 0 is identical, lower is better",
    "the file's perplexity on the same held-out tokens (the full-precision model's in the "
    "tooltip): lower is better", "how long the export took, verification included",
    "where the file is"]


MISMATCH_LABEL = "Write anyway with the closest llama.cpp tokenizer (not exact)"
MISMATCH_TOOLTIP = (
    "llama.cpp has no pre-tokenizer that splits text exactly as this model's tokenizer does. "
    "Ticked, the GGUF is written with the closest one and the measured share of text split "
    "differently is recorded in the verification. The risk: in llama.cpp, LM Studio and Ollama "
    "the model then sees some text as different tokens than it was trained on, and can answer "
    "worse than in the Playground. The MLX adapter and a fused model folder are not affected.")
# The banner shows three lines: what happened and what to do come first, the engine's own
# (long) words after them, whole in the banner's tooltip.
MISMATCH_BANNER = ("Export refused: llama.cpp has no pre-tokenizer that splits text exactly as "
                   "this model's tokenizer does, so no GGUF was written.<br>To write it anyway, "
                   f"tick “{MISMATCH_LABEL}” and press Write GGUF again (hover it for the risk). "
                   "The MLX adapter and a fused model folder work with this tokenizer as they "
                   "are.")


class QuantCombo(QComboBox):
    """The type list: each entry whole in the open list (type, size, use); the closed box
    shows the entry's short form (type and size), which always fits."""

    SHORT = Qt.ItemDataRole.UserRole + 1

    def __init__(self, parent=None):
        super().__init__(parent)
        # sized for the short form, not the longest entry (which would widen the page)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def fit_popup(self) -> None:
        view = self.view()
        view.setMinimumWidth(view.sizeHintForColumn(0) + 2 * view.frameWidth() + 24)

    def paintEvent(self, event) -> None:
        painter = QStylePainter(self)
        opt = QStyleOptionComboBox()
        self.initStyleOption(opt)
        opt.currentText = self.currentData(self.SHORT) or opt.currentText
        painter.drawComplexControl(QStyle.ComplexControl.CC_ComboBox, opt)
        painter.drawControl(QStyle.ControlElement.CE_ComboBoxLabel, opt)


def collapsing(banner: Banner) -> Banner:
    """``banner`` keeping no room while hidden (a Banner keeps its room by default)."""
    policy = banner.sizePolicy()
    policy.setRetainSizeWhenHidden(False)
    banner.setSizePolicy(policy)
    return banner


def expected_size(base_params: int, bits_per_weight: float) -> int:
    return int(base_params * bits_per_weight / 8)


def ollama_name_for(adapter: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in adapter.lower()).strip("-._")
    return name or "my-model"


class ExportPage(QWidget):
    TITLE = "Export"
    EXPLANATION = ("Write your fine-tuned model as one GGUF file (llama.cpp, LM Studio, Ollama), "
                   "checked after writing, and hand it to Ollama in one click.")

    def __init__(self, state, settings=None, confirm: Callable[[str, str, str], bool] | None = None,
                 parent=None):
        super().__init__(parent)
        self.state = state
        self.settings = settings
        self.confirm = confirm or self._confirm_dialog
        self.export_job = None
        self.ollama_job = None
        self.last_export: ExportResult | None = None
        self.verified = False
        self.ollama: dict | None = None  # Ollama's last known status (see set_ollama)
        self._status_checked = False
        self._status_job = None  # the latest status check while it runs (see check_ollama)
        self.sizes: dict[str, dict[str, int]] = {}  # base model -> type -> expected bytes
        self.sizes_jobs: dict[str, object] = {}     # base model -> its --list-types job
        self.imatrix_file = ""
        self._build()
        state.library_changed.connect(self.refresh_adapters)
        self.refresh_adapters()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(page_header(self.TITLE, self.EXPLANATION))
        row = QHBoxLayout()
        row.addWidget(self._build_gguf_group(), 1)
        row.addWidget(self._build_ollama_group(), 1)
        lay.addLayout(row)
        # Q2_K/Q3_K without an importance matrix: the engine's reason, full width
        self.imatrix_banner = collapsing(Banner())
        lay.addWidget(self.imatrix_banner)
        self._build_results(lay)
        # What a job did, above the buttons that act on it. Here, not above the panels, where
        # its kept room was an empty band at 1024x700: no room is kept, the results table
        # (which stretches) gives it room, so neither the panels nor the footer move.
        self.banner = collapsing(Banner())
        lay.addWidget(self.banner)
        lay.addLayout(self._build_footer())
        self.reveal = reveal_in_file_manager  # tests record it
        self.command_text = ""
        self.refresh_send()

    def _build_gguf_group(self) -> QGroupBox:
        """What to write: the adapter, the GGUF type, where; Write GGUF, Cancel, progress."""
        gguf = QGroupBox("GGUF file")
        form = QFormLayout(gguf)
        self.adapter_box = QComboBox()
        self.adapter_box.currentIndexChanged.connect(self._update_sizes)
        form.addRow("Adapter", self.adapter_box)
        self.quant_box = QuantCombo()
        self.quant_box.currentIndexChanged.connect(self._update_out)
        self.quant_box.currentIndexChanged.connect(self._update_imatrix_warning)
        form.addRow("Type", self.quant_box)
        self.quant_use = QLabel()  # the chosen type's bits and use, wrapped: never cut off
        self.quant_use.setWordWrap(True)
        self.quant_use.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        # (its one-line width would widen the group and squeeze Send to Ollama)
        self.quant_use.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        form.addRow("", self.quant_use)
        self.imatrix_box = QComboBox()
        self.imatrix_box.setToolTip(IMATRIX_TOOLTIP)
        self._fill_imatrix_box()
        self.imatrix_box.activated.connect(self._imatrix_chosen)
        self.imatrix_box.currentIndexChanged.connect(self._update_imatrix_warning)
        form.addRow("Importance matrix", self.imatrix_box)
        self.adapter_only = QCheckBox("Adapter only (small file for Ollama ADAPTER / llama.cpp "
                                      "--lora)")
        self.adapter_only.toggled.connect(self._update_imatrix_warning)
        form.addRow("", self.adapter_only)
        # Offered only after an export was refused for it: a risk to take knowingly.
        self.allow_mismatch = QCheckBox(MISMATCH_LABEL)
        self.allow_mismatch.setToolTip(MISMATCH_TOOLTIP)
        self.allow_mismatch.hide()
        self.adapter_box.currentIndexChanged.connect(self._hide_mismatch)
        form.addRow("", self.allow_mismatch)
        self.out_edit = QLineEdit()
        form.addRow("Save as", self.out_edit)
        self.export_button = QPushButton("Write GGUF")
        self.export_button.clicked.connect(self.export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        brow = QHBoxLayout()
        brow.addWidget(self.export_button, 1)
        brow.addWidget(self.cancel_button)
        form.addRow("", brow)
        self.progress = QProgressBar()
        self.progress.hide()
        form.addRow("", self.progress)
        return gguf

    def _build_ollama_group(self) -> QGroupBox:
        """Ollama's status, the model's name and system prompt, Send (and why it cannot)."""
        ollama = QGroupBox("Send to Ollama")
        of = QFormLayout(ollama)
        self.ollama_status = QLabel("not checked yet")
        self.ollama_status.setWordWrap(True)
        check = QPushButton("Check")
        check.clicked.connect(self.check_ollama)
        # The status line gets the group's whole width and the button its own row: beside
        # the button it had 127 px at 1024x700 and was cut off.
        of.addRow("Status", self.ollama_status)
        of.addRow("", check)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("my-model")
        of.addRow("Model name", self.name_edit)
        self.system_edit = QPlainTextEdit()
        self.system_edit.setPlaceholderText("optional system prompt")
        self.system_edit.setMaximumHeight(70)
        of.addRow("System prompt", self.system_edit)
        self.send_button = QPushButton("Send to Ollama")
        self.send_button.clicked.connect(lambda: self.send_to_ollama())
        of.addRow("", self.send_button)
        self.send_reason = QLabel()  # why the button is disabled, where it can be seen
        self.send_reason.setWordWrap(True)
        self.send_reason.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        of.addRow("", self.send_reason)
        return ollama

    def _build_results(self, lay: QVBoxLayout) -> None:
        """The types exported for this adapter, the verification checks, and what the
        hand-off printed."""
        self.results_tabs = QTabWidget()
        self.exported = QTableWidget(0, len(EXPORTED_COLUMNS))
        self.exported.setHorizontalHeaderLabels(EXPORTED_COLUMNS)
        for i, tip in enumerate(EXPORTED_TIPS):
            self.exported.horizontalHeaderItem(i).setToolTip(tip)
        self.exported.horizontalHeader().setSectionResizeMode(
            len(EXPORTED_COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        self.exported.verticalHeader().hide()
        self.exported.verticalHeader().setDefaultSectionSize(  # one line a row: more rows
            self.exported.fontMetrics().lineSpacing() + 8)
        self.exported.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.results_tabs.addTab(self.exported, "Exported for this adapter")
        self.checks = QTableWidget(0, 3)
        self.checks.setHorizontalHeaderLabels(["Check", "Result", "Detail"])
        self.checks.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.checks.verticalHeader().hide()
        self.checks.setWordWrap(True)
        self.results_tabs.addTab(self.checks, "Verification")
        lay.addWidget(self.results_tabs, 1)
        self.ollama_result = QPlainTextEdit()
        self.ollama_result.setReadOnly(True)
        self.ollama_result.setMaximumHeight(110)
        self.ollama_result.hide()
        lay.addWidget(self.ollama_result)

    def _build_footer(self) -> QHBoxLayout:
        """Show the file, copy the Ollama command."""
        frow = QHBoxLayout()
        self.reveal_button = QPushButton("Show in Finder")
        self.reveal_button.setToolTip("show the GGUF file in Finder")
        self.reveal_button.clicked.connect(
            lambda: self.reveal(str(self.last_export.path)) if self.last_export else None)
        self.copy_button = QPushButton("Copy command")
        self.copy_button.setToolTip("copy the Ollama command shown above")
        self.copy_button.clicked.connect(lambda: copy_text(self.command_text))
        frow.addWidget(self.reveal_button)
        frow.addWidget(self.copy_button)
        frow.addWidget(self._lmstudio_button())
        frow.addStretch(1)
        return frow

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if not self._status_checked:  # Ollama's status when the page is first opened
            self._status_checked = True
            self.check_ollama()

    # -- choices -----------------------------------------------------------------------------

    def refresh_adapters(self) -> None:
        keep = self.adapter_box.currentData()
        self.adapter_box.blockSignals(True)
        self.adapter_box.clear()
        for a in library.list_adapters():
            if a.weights.exists():
                self.adapter_box.addItem(a.name, a.name)
        i = self.adapter_box.findData(keep)
        self.adapter_box.setCurrentIndex(max(i, 0))
        self.adapter_box.blockSignals(False)
        self._update_sizes()

    def select_adapter(self, name: str) -> None:
        self.refresh_adapters()
        i = self.adapter_box.findData(name)
        if i >= 0:
            self.adapter_box.setCurrentIndex(i)

    def _adapter(self):
        name = self.adapter_box.currentData()
        if not name:
            return None
        try:
            return library.get_adapter(name)
        except Exception:  # noqa: BLE001 - gone or unreadable: nothing to size or list
            return None

    def _base_params(self) -> int:
        a = self._adapter()
        est = estimate(read_model_config(a.base_model), {}) if a and a.base_model else None
        return est.base_params if est else 0

    def _update_sizes(self) -> None:
        """The type list: the engine's planned size of each type's file for this adapter's
        base once `tailor export --list-types` has answered (asked off the UI thread, once a
        base), until then the size the typical bits per weight give."""
        keep = self.quant_box.currentData() or DEFAULT_QUANT
        a = self._adapter()
        base = a.base_model if a else ""
        planned = self.sizes.get(base) or {}
        if base and base not in self.sizes:
            self._request_sizes(base)
        params = 0 if planned else self._base_params()
        self.quant_box.blockSignals(True)
        self.quant_box.clear()
        for key, bpw, note in QUANTS:
            size = planned.get(key) or (expected_size(params, bpw) if params else 0)
            about = f" · {'' if planned.get(key) else 'about '}{human_bytes(size)}" if size \
                else ""
            self.quant_box.addItem(f"{key.upper()}{about} — {note}", key)
            i = self.quant_box.count() - 1
            self.quant_box.setItemData(i, f"{key.upper()}{about}", QuantCombo.SHORT)
            self.quant_box.setItemData(i, f"{key.upper()}: ~{bpw:g} bits per weight, {note}",
                                       Qt.ItemDataRole.ToolTipRole)
        self.quant_box.fit_popup()
        self.quant_box.setCurrentIndex(max(self.quant_box.findData(keep), 0))
        self.quant_box.blockSignals(False)
        name = self.adapter_box.currentData() or ""
        if name and not self.name_edit.isModified():
            self.name_edit.setText(ollama_name_for(name))
        self._update_out()
        self._update_imatrix_warning()
        self.refresh_exported()

    def _request_sizes(self, base: str) -> None:
        if base in self.sizes_jobs:
            return
        job = self.state.queue.submit("GGUF sizes", commands.export_types_command(base),
                                      heavy=False)
        self.sizes_jobs[base] = job

        def sized(result) -> None:
            types = QuantTypeList.coerce(result).types
            self.sizes[base] = {t.name: t.expected_bytes for t in types if t.expected_bytes}
            self._update_sizes()

        def unsized(message: str, hint: str, _failed) -> None:
            self.sizes[base] = {}  # the bits-per-weight estimate stays; asked once a base
            self.quant_box.setToolTip(f"expected sizes from typical bits per weight "
                                      f"({message})")

        bind_job(job, sized, on_failure=unsized,
                 on_ended=lambda _: self.sizes_jobs.pop(base, None))

    # -- importance matrix -------------------------------------------------------------------

    def _fill_imatrix_box(self) -> None:
        keep = self.imatrix_box.currentData()
        self.imatrix_box.blockSignals(True)
        self.imatrix_box.clear()
        self.imatrix_box.addItem("None", IMATRIX_NONE)
        self.imatrix_box.addItem("From the training data", IMATRIX_AUTO)
        if self.imatrix_file:
            self.imatrix_box.addItem(f"File: {Path(self.imatrix_file).name}", self.imatrix_file)
            self.imatrix_box.setItemData(2, self.imatrix_file, Qt.ItemDataRole.ToolTipRole)
        self.imatrix_box.addItem("Choose a file…", IMATRIX_CHOOSE)
        i = self.imatrix_box.findData(keep) if keep not in (None, IMATRIX_CHOOSE) else 0
        self.imatrix_box.setCurrentIndex(max(i, 0))
        self.imatrix_box.blockSignals(False)

    def _imatrix_chosen(self, index: int) -> None:
        if self.imatrix_box.itemData(index) != IMATRIX_CHOOSE:
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Importance matrix", str(Path.home()),
            "Importance matrix (*.gguf *.dat);;All files (*)")
        self.set_imatrix_file(path)

    def set_imatrix_file(self, path: str) -> None:
        """Use the matrix file ``path`` (an empty path keeps the choice before)."""
        if path:
            self.imatrix_file = path
        self.imatrix_box.setCurrentIndex(0)  # (fill keeps the current data; "choose" is none)
        self._fill_imatrix_box()
        if path:
            self.imatrix_box.setCurrentIndex(self.imatrix_box.findData(path))
        self._update_imatrix_warning()

    def imatrix(self) -> str | None:
        """What the export is given: None, "auto" or a matrix file."""
        value = self.imatrix_box.currentData()
        if self.adapter_only.isChecked() or value in (IMATRIX_NONE, IMATRIX_CHOOSE, None):
            return None
        return value

    def _update_imatrix_warning(self, *_) -> None:
        """The chosen type's line; Q2_K/Q3_K chosen without an importance matrix: the
        engine's warning and reason."""
        q = next((q for q in QUANT_TYPES if q.name == self.quant_box.currentData()), None)
        self.quant_use.setText(f"~{q.bits_per_weight:g} bits per weight: {q.use}"
                               + (" (an importance matrix helps)" if q.wants_imatrix else "")
                               if q else "")
        adapter_only = self.adapter_only.isChecked()
        self.imatrix_box.setEnabled(not adapter_only)
        warning = None if adapter_only or self.imatrix() else \
            imatrix_warning(self.quant_box.currentData() or "")
        if warning:
            self.imatrix_banner.show_message(
                "warn", html.escape(warning) + ". Choose “From the training data” under "
                "Importance matrix.")
        else:
            self.imatrix_banner.clear()

    # -- exported types ----------------------------------------------------------------------

    def refresh_exported(self) -> None:
        """The GGUFs exported from the chosen adapter (its exports list), with their size,
        measured quality and time; the tab's title counts them."""
        a = self._adapter()
        entries = [e for e in listed_export_records(a.path) if e.kind == "model"] if a else []
        self.exported.setRowCount(len(entries))
        for row, e in enumerate(entries):
            for col, (text, tip) in enumerate(exported_cells(e)):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if col in (1, 2, 3, 4):
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight |
                                          Qt.AlignmentFlag.AlignVCenter)
                self.exported.setItem(row, col, item)
        for col in range(len(EXPORTED_COLUMNS) - 1):
            self.exported.resizeColumnToContents(col)
        self.results_tabs.setTabText(0, f"Exported for this adapter ({len(entries)})")

    def _update_out(self) -> None:
        name = self.adapter_box.currentData() or ""
        quant = self.quant_box.currentData() or "q4_k_m"
        if name:
            self.out_edit.setText(str(paths.exports_dir() / f"{name}-{quant}.gguf"))

    # -- export ------------------------------------------------------------------------------

    def export(self) -> None:
        name = self.adapter_box.currentData()
        if not name:
            self.banner.show_message("warn", "No adapter to export yet: train one first.")
            return
        out = self.out_edit.text().strip()
        if Path(out).exists():
            self.banner.show_message("warn", f"{html.escape(out)} already exists; choose "
                                     "another file name (nothing is overwritten).")
            return
        argv = commands.export_command(
            name, self.quant_box.currentData(), out, adapter_only=self.adapter_only.isChecked(),
            allow_tokenizer_mismatch=self.allow_mismatch.isChecked(), imatrix=self.imatrix())
        self.export_job = job = self.state.queue.submit(f"Export {name}", argv)
        self.verified = False
        self.last_export = None
        self.refresh_send()
        self.checks.setRowCount(0)
        bind_job(job, self._on_exported, banner=self.banner, progress=self.progress,
                 disable=[self.export_button], enable=[self.cancel_button],
                 running=f"Exporting {html.escape(name)}…", on_failure=self._export_failed,
                 cancelled="Export cancelled; nothing was written.",
                 on_ended=lambda _: (self.refresh_send(), self.refresh_exported()))

    def cancel(self) -> None:
        if self.export_job is not None and not self.export_job.done:
            self.state.queue.cancel(self.export_job)

    def _error(self, title: str, message: str, hint: str) -> None:
        self.banner.show_message("error", failure_html(title, message, hint))

    def _export_failed(self, message: str, hint: str, failed) -> None:
        """The engine's words; a refusal for the tokenizer also offers the checkbox that
        writes the file anyway (and names it, not the command-line flag of the engine's hint)."""
        if failed is None:
            self._error("The export worker crashed", message, hint)
        elif tokenizer_mismatch(failed):
            self.allow_mismatch.show()
            self.banner.show_message("error", f"{MISMATCH_BANNER}<br>{html.escape(message)}")
        else:
            self._error("Export failed", message, hint)

    def _hide_mismatch(self, *_) -> None:
        """Another adapter: the permission given for the last one's tokenizer does not carry."""
        self.allow_mismatch.setChecked(False)
        self.allow_mismatch.hide()

    def _on_exported(self, result: ExportResult | dict) -> None:
        """Show what the export wrote: the engine's ExportResult (a version-1 dict is read
        into one)."""
        self.last_export = result = ExportResult.coerce(result)
        checks = result.checks
        self.checks.setRowCount(len(checks))
        for i, c in enumerate(checks):
            self.checks.setItem(i, 0, QTableWidgetItem(str(c.name)))
            passed = c.passed  # None: a known difference, recorded, not failed
            ok = QTableWidgetItem({True: "passed", False: "FAILED", None: "noted"}[passed])
            ok.setForeground({True: Qt.GlobalColor.darkGreen, False: Qt.GlobalColor.red,
                              None: Qt.GlobalColor.gray}[passed])
            self.checks.setItem(i, 1, ok)
            detail = QTableWidgetItem(str(c.detail))
            detail.setToolTip(detail.text())  # the logit line is long; the cell wraps it too
            self.checks.setItem(i, 2, detail)
        self.checks.resizeColumnToContents(0)
        self.checks.resizeColumnToContents(1)
        self.checks.resizeRowsToContents()
        self.results_tabs.setCurrentWidget(self.checks)
        self.verified = result.verified
        path = str(result.path)
        size = result.size_bytes or (result.path.stat().st_size if result.path.is_file() else 0)
        if self.verified and result.adapter_only:  # what was written, not the checkbox now
            self.banner.show_message("ok", f"Verified: {html.escape(Path(path).name)} "
                                     f"({human_bytes(size)}), a LoRA adapter file for "
                                     "llama.cpp --lora or an Ollama ADAPTER line on its base.")
        elif self.verified:
            self.banner.show_message("ok", f"Verified: {html.escape(Path(path).name)} "
                                     f"({human_bytes(size)}) loads and matches the trained "
                                     "model. Next: Send to Ollama.")
        else:
            self.banner.show_message("error", f"{html.escape(Path(path).name)} was written but "
                                     "did not pass verification; see the checks below.")
        self.refresh_send()

    def send_problem(self) -> str | None:
        """Why "Send to Ollama" cannot be pressed now, in one sentence (None: it can)."""
        if self.ollama_job is not None and not self.ollama_job.done:
            return "Sending to Ollama…"
        if self.export_job is not None and not self.export_job.done:
            return "Wait for the export to finish and pass verification."
        if not self.last_export:
            return "Write a GGUF first (Write GGUF, left): Ollama gets the verified file."
        if not self.verified:
            return "The last GGUF did not pass verification, so it is not sent; see the checks."
        if self.last_export.adapter_only:
            return ("An adapter-only file needs its base model in Ollama: write a full GGUF "
                    "to send it from here.")
        return None

    def refresh_send(self) -> None:
        self.reveal_button.setEnabled(self.last_export is not None)
        self.lmstudio_button.setEnabled(self.lmstudio_ready())
        self.copy_button.setEnabled(bool(self.command_text))
        problem = self.send_problem()
        self.send_button.setEnabled(problem is None)
        self.send_button.setToolTip(problem or "create the model in Ollama from this GGUF")
        self.send_reason.setText(problem or "")
        self.send_reason.setVisible(problem is not None)

    # -- Ollama ------------------------------------------------------------------------------

    def host(self) -> str:
        return str(self.settings.value("ollama/host", "") or "") if self.settings else ""

    def check_ollama(self) -> None:
        """Ask the engine for Ollama's status at the host set now; the line says "checking…"
        until it answers. Only the latest check's answer is shown: checks run side by side
        and end in any order, and the page's first check (the host before the user changed
        it) ending last had left "not running" on the line for good."""
        host = self.host()
        job = self.state.queue.submit("Ollama status", commands.ollama_status_command(host),
                                      heavy=False)
        self._status_job = job

        def answered(status) -> None:
            if job is self._status_job:  # else superseded: a later check or hand-off knows
                self.set_ollama(status)

        def ended(_state) -> None:  # cancelled (no answer): the line shows what was known
            if job is self._status_job:
                self._status_job = None
                self.refresh_ollama()

        bind_job(job, answered, on_failure=lambda message, hint, _: answered(
            OllamaStatus(host=host, reachable=False, error=message, hint=hint)),
                 on_ended=ended)
        self.refresh_ollama()

    def set_ollama(self, status: OllamaStatus | dict | None) -> None:
        """The one record of Ollama's status (from a check, or what a hand-off found); the
        status line is derived from it, so it never contradicts a banner. It supersedes any
        check still running: that check's answer is older news."""
        self._status_job = None
        self.ollama = None if status is None else OllamaStatus.coerce(status)
        self.refresh_ollama()

    def ollama_running(self) -> bool:
        r = self.ollama
        return bool(r is not None and r.reachable and r.version)

    def refresh_ollama(self) -> None:
        r = self.ollama
        if self._status_job is not None:
            text = "checking…"
        elif r is None:
            text = "not checked yet"
        elif self.ollama_running():
            text = (f"running (version {html.escape(r.version)}, {len(r.models)} models) at "
                    f"{html.escape(r.host)}")
        else:
            text = "not running" + (f" at {html.escape(r.host)}" if r.host else "")
        # The longer explanation lives in the tooltip: at 1024x700 the line was cut off.
        self.ollama_status.setText(text)
        self.ollama_status.setToolTip(
            "" if self.ollama_running() else "without Ollama, “Send to Ollama” writes a "
            "Modelfile folder (GGUF + Modelfile) and shows the command to import it later")

    def send_to_ollama(self, replace: bool = False) -> None:
        if not (self.last_export and self.verified):
            return
        name = self.name_edit.text().strip() or ollama_name_for(self.adapter_box.currentData())
        gguf = str(self.last_export.path)
        folder = str(Path(gguf).with_suffix("")) + "-ollama"
        argv = commands.ollama_command(gguf, name, system=self.system_edit.toPlainText().strip(),
                                       host=self.host(), modelfile_dir=folder, replace=replace)
        self.ollama_job = job = self.state.queue.submit(f"Ollama {name}", argv)
        bind_job(job, lambda result: self._on_sent(name, result), banner=self.banner,
                 progress=self.progress, running=f"Sending {html.escape(name)} to Ollama…",
                 on_failure=lambda message, hint, failed: self._on_send_failed(
                     message, hint, name, failed is not None and name_taken(failed)),
                 on_ended=lambda _: self.refresh_send())

    def _on_sent(self, name: str, result: HandoffResult | dict) -> None:
        """Show what the hand-off did: the model created in Ollama, or (Ollama not running)
        the Modelfile folder written and the command that imports it."""
        r = HandoffResult.coerce(result)
        folder = r.modelfile_dir
        command = r.command or (f"ollama create {name} -f {folder}/Modelfile" if folder else "")
        if r.created:
            self.banner.show_message("ok", f"In Ollama: run <code>ollama run "
                                     f"{html.escape(name)}</code>.")
            text = f"ollama run {name}"
            self.check_ollama()  # the status line now lists the new model
        else:
            self.set_ollama(OllamaStatus(host=r.host or self.host(), reachable=False))
            self.banner.show_message("warn", "Ollama is not running, so Tailor wrote a ready "
                                     f"folder: {html.escape(folder)}<br>Start Ollama and run "
                                     f"<code>{html.escape(command)}</code>")
            text = command
        if folder:
            text += f"\n\nModelfile folder (also for LM Studio and llama.cpp): {folder}"
        self.command_text = text.split("\n", 1)[0]
        self.ollama_result.setPlainText(text)
        self.ollama_result.show()
        self.refresh_send()

    def _on_send_failed(self, message: str, hint: str, name: str = "",
                        name_taken: bool = False) -> None:
        if name_taken:
            # Asked after the job ended (a queued callback), so the dialog never nests in the
            # worker's signal handler; "No" leaves Ollama's model as it was.
            QTimer.singleShot(0, lambda: self._offer_replace(name, message))
            return
        self._error("Sending to Ollama failed", message, hint)

    def _offer_replace(self, name: str, message: str) -> None:
        if self.confirm("Replace the model in Ollama?",
                        f"{message}.\n\nReplace {name} with this export? The GGUF stays "
                        "either way.", "Replace"):
            self.send_to_ollama(replace=True)
        else:
            self.banner.show_message("warn", f"{html.escape(message)}. Choose another model "
                                     "name to keep both.")

    def _confirm_dialog(self, title: str, text: str, verb: str) -> bool:
        return ask(self, title, text, verb)

    # -- LM Studio (issue 23) ----------------------------------------------------------------

    def _lmstudio_button(self) -> QPushButton:
        self.lmstudio_button = QPushButton("Open in LM Studio")
        self.lmstudio_button.setToolTip("put the verified GGUF in LM Studio's models folder (a "
                                        "hard link, else a copy; `lms import` when installed)")
        self.lmstudio_button.setEnabled(False)
        self.lmstudio_button.clicked.connect(lambda: self.open_in_lmstudio())
        return self.lmstudio_button

    def lmstudio_ready(self) -> bool:
        e = self.last_export
        return e is not None and self.verified and not e.adapter_only

    def open_in_lmstudio(self) -> None:
        from engine.results import LMStudioPlacement

        e = self.last_export
        argv = commands.engine_argv("lmstudio", "--gguf", str(e.path),
                                    "--model", Path(e.source or e.path.stem).name)
        job = self.state.queue.submit(f"LM Studio {e.path.name}", argv, heavy=False)

        def placed(result) -> None:
            r = LMStudioPlacement.coerce(result)
            self.banner.show_message("ok", f"In LM Studio (My Models: {html.escape(r.model_key)})"
                                     f": {html.escape(r.path)} ({html.escape(r.method)})")
            self.ollama_result.setPlainText(f"LM Studio: {r.path}\nmodels folder: "
                                            f"{r.models_folder} ({r.models_folder_from})")
            self.ollama_result.show()

        bind_job(job, placed, banner=self.banner, running="Putting the GGUF in LM Studio…",
                 disable=[self.lmstudio_button], on_ended=lambda _: self.refresh_send())


def tokenizer_mismatch(failed) -> bool:
    """The export was refused because llama.cpp has no pre-tokenizer that reproduces the
    model's: the engine's hint names the flag that allows it (tests/export pins that hint)."""
    return "--allow-tokenizer-mismatch" in (failed.hint or "")


def name_taken(failed) -> bool:
    """The hand-off was refused because the Ollama model name is in use (the page then offers
    to replace it): the engine's error code, never its class name or wording."""
    return failed.code == ErrorCode.NAME_TAKEN


def exported_cells(e) -> list[tuple[str, str]]:
    """(text, tooltip) of each column of the exported-types table for a ListedExport."""
    q = e.quality
    if q is not None and q.measured:
        kl = (f"{q.kl_mean:.2e}" if q.kl_mean < 1e-3 else f"{q.kl_mean:.4f}",
              f"mean {q.kl_mean:.3g}, median {q.kl_median:.3g}, 99th percentile "
              f"{q.kl_p99:.3g}, largest {q.kl_max:.3g} nats per token over {q.tokens} tokens "
              f"of {q.text}; same top token on {q.same_top:.1%}. Reference: {q.reference}"
              + (f". Measured with {q.runtime}" if q.runtime else "")
              + (f". ({q.note})" if q.note else ""))
        ppl = (f"{q.perplexity:.3f}", f"{q.perplexity:.4f} (full precision: "
               f"{q.reference_perplexity:.4f}) on {q.tokens} tokens of {q.text}")
    else:
        why = q.note if q is not None else "exported without llama.cpp verification"
        kl = ppl = ("–", why or "not measured")
    took = f"{e.seconds:.1f} s" if e.seconds is not None else "–"
    kind = (f"{e.quant.upper()} + imatrix", f"{e.quant}, quantized with the importance matrix "
            f"{e.imatrix}") if e.imatrix else (e.quant.upper(), f"{e.quant}, no importance matrix")
    return [kind, (human_bytes(e.size), f"{e.size:,} bytes"), kl, ppl,
            (took, "export and verification"),
            (Path(e.path).name + (" (replaced since)" if e.changed else ""), e.path)]
