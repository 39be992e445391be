"""Train: settings (presets, a tooltip on every field from the engine's config help), the
parameter/memory estimate, Start/Stop/Resume, and the live run: chart, progress, log."""
from __future__ import annotations

import dataclasses
import html
import math
import time
import typing
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout,
                               QHBoxLayout, QLabel, QLineEdit, QPlainTextEdit, QProgressBar,
                               QPushButton, QScrollArea, QSpinBox, QSplitter, QTabWidget,
                               QToolButton, QVBoxLayout, QWidget)

from engine.results import DataReport, JobState, TrainResult
from engine.train.config import PRESET_HELP, PRESETS, TrainConfig
from engine.train.pack_plan import pack_rows

from .. import commands
from ..estimate import estimate, human_bytes, human_count, longest_in, read_model_config
from ..history import LossHistory
from ..machines import SeveralMacs
from ..job_binding import bind_job, failure_html
from ..widgets import Banner, LossChart, MetricChart, page_header

BASIC_FIELDS = ("method", "objective", "rank", "alpha", "learning_rate", "epochs", "iters", "batch_size",
                "max_seq_length", "grad_checkpoint")
HIDDEN_FIELDS: tuple[str, ...] = ()
LABELS = {"learning_rate": "Learning rate", "max_seq_length": "Max sequence length",
          "grad_checkpoint": "Gradient checkpointing", "grad_accumulation": "Gradient accumulation",
          "rslora": "rsLoRA scaling", "num_layers": "Layers (last N)", "iters": "Steps",
          "eval_every": "Validate every", "save_every": "Checkpoint every",
          "val_batches": "Validation batches", "keep_checkpoints": "Checkpoints kept",
          "report_every": "Report every", "grad_clip": "Gradient clip",
          "quantize_base": "Quantize base (bits)", "objective": "Objective",
          "beta": "DPO beta", "orpo_lambda": "ORPO lambda",
          "init_adapter": "Start from adapter", "lora_plus_ratio": "LoRA+ ratio",
          "pack": "Pack examples", "label_smoothing": "DPO label smoothing",
          "baseline_prompts": "Baseline prompts"}
# Fields that mean something only for some objectives: disabled (with the reason) otherwise.
OBJECTIVE_ONLY = {"beta": ("dpo",), "label_smoothing": ("dpo",), "orpo_lambda": ("orpo",),
                  "pack": ("sft",)}


VALIDATIONS_PER_RUN = 15


def auto_eval_every(total_steps: int) -> int:
    """Validate every N steps so a run of any length draws about VALIDATIONS_PER_RUN points
    (a 108-step run validated every 100 steps drew three points joined by lines); bounded so
    a very long run still validates at least every 1000 steps."""
    return max(1, min(1000, round(total_steps / VALIDATIONS_PER_RUN)))


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


class FloatBox(QDoubleSpinBox):
    """A float field that shows 1e-04 as 0.0001 and 32.0 as 32 (no fixed decimals)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setDecimals(8)

    def textFromValue(self, value: float) -> str:
        return f"{value:.6g}"


class SettingsForm(QWidget):
    """One widget per ``TrainConfig`` field, built from ``dataclasses.fields`` and its help."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.train_examples = 0  # from the data check; sizes an epoch for auto validation
        self.train_stats = None  # the data check's TokenStats: the packed rows' estimate
        self.labels: dict[str, QLabel] = {}
        self.hints = typing.get_type_hints(TrainConfig)
        self.widgets: dict[str, QWidget] = {}
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        basic = QFormLayout()
        basic.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        lay.addLayout(basic)
        self.more = QToolButton(text="More settings", checkable=True)
        self.more.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.more.setArrowType(Qt.ArrowType.RightArrow)
        lay.addWidget(self.more)
        self.advanced = QWidget()
        adv = QFormLayout(self.advanced)
        adv.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.advanced)
        self.advanced.hide()
        self.more.toggled.connect(self._toggle_more)
        fields = [f for f in dataclasses.fields(TrainConfig) if f.name not in HIDDEN_FIELDS]
        fields.sort(key=lambda f: BASIC_FIELDS.index(f.name) if f.name in BASIC_FIELDS else 99)
        for f in fields:
            w = self._make(f)
            w.setToolTip(f.metadata.get("help", ""))
            if not isinstance(w, QCheckBox):
                w.setMinimumWidth(130)
            self.widgets[f.name] = w
        for f in fields:
            w = self.widgets[f.name]
            if f.name == "iters":
                continue  # shares the "Length" row with epochs
            label = QLabel(_label(f.name))
            label.setToolTip(w.toolTip())
            self.labels[f.name] = label
            field: QWidget = w
            if f.name == "epochs":
                label.setText("Length")
                field = self._length_row()
            elif f.name == "eval_every":
                field = self._eval_row(w)
            (basic if f.name in BASIC_FIELDS else adv).addRow(label, field)
            if f.name == "epochs":
                self.steps_note = QLabel()
                self.steps_note.setWordWrap(True)
                self.steps_note.setForegroundRole(QPalette.ColorRole.PlaceholderText)
                basic.addRow("", self.steps_note)
        self.help = {f.name: f.metadata.get("help", "") for f in fields}
        self.widgets["objective"].currentIndexChanged.connect(self._enable_for_objective)
        self.changed.connect(self._show_steps)
        lay.addStretch(1)
        self.set_values(TrainConfig().to_dict())
        self._enable_for_objective()

    # A run's length is either epochs or steps, never both at once: the mode is explicit, so a
    # Steps value typed once cannot silently override a preset's epochs (issue 14).
    def _length_row(self) -> QWidget:
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        self.length_mode = QComboBox()
        self.length_mode.addItem("Epochs", "epochs")
        self.length_mode.addItem("Steps", "iters")
        self.length_mode.setToolTip("train for a number of passes over the data (epochs) or "
                                    "for an exact number of optimizer steps")
        self.length_mode.currentIndexChanged.connect(self._show_length)
        self.length_mode.currentIndexChanged.connect(self.changed)
        h.addWidget(self.length_mode)
        for name in ("epochs", "iters"):  # beside the mode box: 130 px overflowed at 1024x700
            self.widgets[name].setMinimumWidth(80)
            h.addWidget(self.widgets[name], 1)
        self.widgets["iters"].setMinimum(1)
        self._show_length()
        return row

    def _show_length(self, *_) -> None:
        steps = self.length_mode.currentData() == "iters"
        if steps and self.widgets["epochs"].isVisibleTo(self) and not self.signalsBlocked():
            total = self.total_steps_for_epochs()  # switching: the same run, counted in steps
            if total:
                self.widgets["iters"].setValue(total)
        self.widgets["iters"].setVisible(steps)
        self.widgets["epochs"].setVisible(not steps)

    def _eval_row(self, spin: QWidget) -> QWidget:
        row = QWidget()
        h = QHBoxLayout(row)
        h.setContentsMargins(0, 0, 0, 0)
        h.addWidget(spin, 1)
        self.eval_auto = QCheckBox("auto")
        self.eval_auto.setToolTip(f"validate about {VALIDATIONS_PER_RUN} times per run, "
                                  "whatever its length")
        self.eval_auto.setChecked(True)
        self.eval_auto.toggled.connect(self.changed)
        self.eval_auto.toggled.connect(lambda on: spin.setEnabled(not on))
        spin.setEnabled(False)
        h.addWidget(self.eval_auto)
        return row

    def total_steps(self) -> int | None:
        """The run's optimizer steps, as the engine will count them (None: data not checked)."""
        if self.length_mode.currentData() == "iters":
            return int(self.widgets["iters"].value())
        return self.total_steps_for_epochs()

    def _enable_for_objective(self, *_) -> None:
        """Beta and label smoothing for DPO, lambda for ORPO, packing for SFT only."""
        objective = self.widgets["objective"].currentData()
        for name, objectives in OBJECTIVE_ONLY.items():
            on = objective in objectives
            tip = self.help[name] if on else (
                f"only for {' or '.join(o.upper() for o in objectives)} runs "
                f"(this run: {str(objective).upper()}) — {self.help[name]}")
            for w in (self.widgets[name], self.labels[name]):
                w.setEnabled(on)
                w.setToolTip(tip)

    def packed(self) -> bool:
        v = self._raw_values()
        return bool(v.get("pack")) and v.get("objective", "sft") == "sft"

    def train_units(self) -> tuple[int, bool]:
        """What a batch counts: (examples, False), or with Pack an upper estimate of the packed
        rows from the data check's length histogram, (rows, True)."""
        if not self.packed() or self.train_stats is None:
            return self.train_examples, False
        rows = packed_rows_estimate(self.train_stats, int(self._raw_values()["max_seq_length"]))
        return (min(rows, self.train_examples) if rows else self.train_examples), True

    def _show_steps(self) -> None:
        total = self.total_steps()
        if self.length_mode.currentData() == "iters" or not total:
            self.steps_note.setText("" if total else "steps: known once the data is checked")
            return
        units, packed = self.train_units()
        self.steps_note.setText(
            f"about {total:,} steps or fewer (packed: about {units:,} rows or fewer from "
            f"{self.train_examples:,} examples)" if packed else f"{total:,} steps")

    def total_steps_for_epochs(self) -> int | None:
        v = self._raw_values()
        if not self.train_examples:
            return None
        units, _ = self.train_units()
        per_epoch = math.ceil(units / max(int(v["batch_size"]), 1))
        return max(1, math.ceil(float(v["epochs"]) * per_epoch /
                                max(int(v["grad_accumulation"]), 1)))

    def _toggle_more(self, on: bool) -> None:
        self.advanced.setVisible(on)
        self.more.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)

    def _make(self, f: dataclasses.Field) -> QWidget:
        tp = self.hints[f.name]
        meta = f.metadata
        if meta.get("choices"):
            w = QComboBox()
            for c in meta["choices"]:
                w.addItem(str(c), c)
            w.currentIndexChanged.connect(self.changed)
        elif tp is bool:
            w = QCheckBox()
            w.toggled.connect(self.changed)
        elif tp is int:
            w = QSpinBox()
            w.setRange(int(meta.get("min") if meta.get("min") is not None else -2**31),
                       int(min(meta.get("max") if meta.get("max") is not None else 2**31 - 1,
                               2**31 - 1)))
            w.valueChanged.connect(self.changed)
        elif tp is float:
            w = FloatBox()
            w.setRange(float(meta.get("min") or 0.0), float(meta.get("max") or 1e9))
            w.setSingleStep(1e-5 if f.name == "learning_rate" else 0.05 if
                            (meta.get("max") or 2) <= 1 else 1.0)
            w.valueChanged.connect(self.changed)
        else:
            w = QLineEdit()
            w.textChanged.connect(self.changed)
        return w

    def values(self) -> dict:
        """TrainConfig fields: the length in the chosen unit only, validation scaled."""
        out = self._raw_values()
        default = TrainConfig()
        if self.length_mode.currentData() == "iters":
            out["epochs"] = default.epochs  # ignored by the engine; left out of the argv
        else:
            out["iters"] = 0
        if self.eval_auto.isChecked():
            total = self.total_steps()
            out["eval_every"] = auto_eval_every(total) if total else default.eval_every
        return out

    def _raw_values(self) -> dict:
        out = {}
        for name, w in self.widgets.items():
            if isinstance(w, QComboBox):
                out[name] = w.currentData()
            elif isinstance(w, QCheckBox):
                out[name] = w.isChecked()
            elif isinstance(w, (QSpinBox, QDoubleSpinBox)):
                out[name] = w.value()
            else:
                out[name] = w.text().strip()
        return out

    def set_values(self, values: dict) -> None:
        self.blockSignals(True)
        try:
            if "iters" in values:
                self.length_mode.setCurrentIndex(
                    self.length_mode.findData("iters" if values["iters"] else "epochs"))
            for name, v in values.items():
                w = self.widgets.get(name)
                if w is None or v is None:
                    continue
                if isinstance(w, QComboBox):
                    w.setCurrentIndex(max(0, w.findData(v)))
                elif isinstance(w, QCheckBox):
                    w.setChecked(bool(v))
                elif isinstance(w, QSpinBox):
                    if name == "iters" and not v:
                        continue  # 0 means "use epochs": the mode says it, the box keeps its number
                    w.setValue(int(v))
                elif isinstance(w, QDoubleSpinBox):
                    w.setValue(float(v))
                else:
                    w.setText(str(v))
        finally:
            self.blockSignals(False)
        self.changed.emit()


def packed_rows_estimate(stats, capacity: int) -> int:
    """Rows the engine's packer makes of the checked examples: its own planner
    (engine/train/pack_plan.py, what ``--pack`` runs) on the report's length histogram with
    each example counted at its bin's upper length, so the figure errs high; never below what
    the tokens need (total / capacity). 0: no data."""
    edges, counts = list(stats.histogram_edges or []), list(stats.histogram_counts or [])
    if not counts or capacity < 1:
        return 0
    lengths = []
    for i, n in enumerate(counts):
        upper = edges[i + 1] - 1 if i + 1 < len(edges) else stats.length_max
        lengths += [max(1, min(upper, stats.length_max, capacity))] * int(n)
    rows = len(pack_rows(lengths, capacity))
    return max(rows, math.ceil(min(stats.tokens, capacity * len(lengths)) / capacity))


def _forward_metrics(worker, slot) -> None:
    """Hand the worker's ``Metrics`` events (preference runs) to ``slot``: app/worker.py has
    no signal for them (yet), so its dispatch is wrapped for this one job."""
    from engine.events import Metrics
    dispatch = worker.dispatch

    def with_metrics(event) -> None:
        if isinstance(event, Metrics):
            slot(event)
        else:
            dispatch(event)
    worker.dispatch = with_metrics


def _fmt_eta(seconds: float) -> str:
    if not seconds or seconds < 0:
        return "–"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s" if m else f"{s}s"


class TrainPage(QWidget):
    """Set up a run, start it, watch it, and say plainly how it ended."""

    TITLE = "Train"
    EXPLANATION = ("Pick a preset (hover a setting to see what it does), name the adapter and "
                   "press Start. Stop keeps a checkpoint you can resume.")

    def __init__(self, state, settings=None, parent=None):
        super().__init__(parent)
        self.state = state
        self.settings = settings  # QSettings: the last run's preset and values are the defaults
        self.history = LossHistory()
        self.job = None
        self.view = RunView()
        self.last_step = None
        self.last_valid = None
        self.log_lines: list[str] = []
        self._model_problem: tuple[str, str | None] = ("", None)
        self.run_inputs: tuple[str, str] | None = None  # a resumed run's (model, dataset)
        self.resume_command = commands.resume_command  # tests give a replaying worker
        self._build()
        state.model_changed.connect(self._on_inputs_changed)
        state.data_changed.connect(self._on_data_changed)
        state.data_status_changed.connect(self._on_data_status)
        state.library_changed.connect(self._suggest_name)
        self.ui_timer = QTimer(self, interval=100, timeout=self._refresh_live)
        self.ui_timer.start()
        self._restore_defaults()
        self._on_inputs_changed()

    # The run's facts; refresh() derives the buttons, banner, progress and counters from them.
    run_name = property(lambda self: self.view.name)
    run_state = property(lambda self: self.view.state)

    def _restore_defaults(self) -> None:
        if self.settings is None:
            return
        import json
        preset = str(self.settings.value("train/preset", "") or "")
        if preset in PRESETS:
            self.preset.setCurrentIndex(self.preset.findData(preset))
        try:
            values = json.loads(str(self.settings.value("train/values", "") or "{}"))
        except ValueError:
            values = {}
        known = {k: v for k, v in values.items() if k in self.form.widgets}
        self.form.eval_auto.setChecked(self.settings.value("train/eval_auto", True, type=bool))
        if known:
            self.form.set_values(known)

    def _remember_defaults(self) -> None:
        if self.settings is not None:
            import json
            self.settings.setValue("train/preset", self.preset.currentData())
            self.settings.setValue("train/values", json.dumps(self.settings_values()))
            self.settings.setValue("train/eval_auto", self.form.eval_auto.isChecked())

    # -- layout ----------------------------------------------------------------------------

    def _build(self) -> None:
        outer = QVBoxLayout(self)
        outer.addWidget(page_header(self.TITLE, self.EXPLANATION))
        split = QSplitter(Qt.Orientation.Horizontal)
        outer.addWidget(split, 1)
        split.addWidget(self._build_setup())
        split.addWidget(self._build_run())
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([360, 900])
        self._show_reward_tabs()
        self.refresh()

    def _build_setup(self) -> QWidget:
        """The left side: what to train on, the name, the preset, the settings, Start/Stop."""
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 6, 0)
        self.inputs_label = QLabel()
        self.inputs_label.setWordWrap(True)
        self.inputs_label.setTextFormat(Qt.TextFormat.RichText)
        ll.addWidget(self.inputs_label)
        top = QFormLayout()
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("my-adapter")
        self.name_edit.setToolTip("the adapter's name in the library (letters, digits, - _ .)")
        top.addRow("Adapter name", self.name_edit)
        self.preset = QComboBox()
        for key in PRESETS:
            self.preset.addItem(key.replace("-", " ").capitalize(), key)
            self.preset.setItemData(self.preset.count() - 1, PRESET_HELP.get(key, ""),
                                    Qt.ItemDataRole.ToolTipRole)
        self.preset.setCurrentIndex(self.preset.findData("balanced"))
        self.preset.currentIndexChanged.connect(self._apply_preset)
        self.preset.activated.connect(self._apply_preset)  # choosing it again resets it too
        top.addRow("Preset", self.preset)
        ll.addLayout(top)
        self.preset_help = QLabel(PRESET_HELP.get("balanced", ""))
        self.preset_help.setWordWrap(True)
        ll.addWidget(self.preset_help)
        self.several_macs = SeveralMacs(self.state, self.settings)  # app/machines.py
        self.machines = self.several_macs.field
        ll.addWidget(self.several_macs)
        self.form = SettingsForm()
        self.form.changed.connect(self._update_estimate)
        self.form.changed.connect(self._update_preset_note)
        self.form.changed.connect(self._show_reward_tabs)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.form)
        ll.addWidget(scroll, 1)
        self.estimate_label = QLabel()
        self.estimate_label.setWordWrap(True)
        ll.addWidget(self.estimate_label)
        ll.addLayout(self._build_buttons())
        left.setMinimumWidth(330)
        return left

    def _build_buttons(self) -> QHBoxLayout:
        buttons = QHBoxLayout()
        self.start_button = QPushButton("Start")
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.resume_button = QPushButton("Resume")
        self.resume_button.setToolTip("continue the last stopped run from its checkpoint")
        self.resume_button.clicked.connect(lambda: self.resume(self.run_name))
        for b in (self.start_button, self.stop_button, self.resume_button):
            buttons.addWidget(b)
        return buttons

    def _build_run(self) -> QWidget:
        """The right side: how the run ended (banner), its counters, progress, chart and log."""
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(6, 0, 0, 0)
        self.banner = Banner()
        self.banner.action_clicked.connect(self._on_banner_action)
        rl.addWidget(self.banner)
        stats = QGridLayout()
        self.stat_labels: dict[str, QLabel] = {}
        for i, (key, title) in enumerate((("step", "Step"), ("epoch", "Epoch"),
                                          ("loss", "Train loss"), ("val", "Val loss"),
                                          ("tps", "Tokens/s"), ("eta", "ETA"),
                                          ("mem", "Peak memory"))):
            t = QLabel(title)
            t.setEnabled(False)
            v = QLabel("–")
            f = v.font()
            f.setPointSizeF(f.pointSizeF() * 1.25)
            f.setBold(True)
            v.setFont(f)
            stats.addWidget(t, 0, i)
            stats.addWidget(v, 1, i)
            self.stat_labels[key] = v
        rl.addLayout(stats)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        rl.addWidget(self.progress)
        self.chart = LossChart(self.history)
        # DPO/ORPO: reward accuracy and margin beside the loss (Metrics events)
        self.reward_charts = {"reward_accuracy": MetricChart("reward_accuracy", "reward accuracy"),
                              "reward_margin": MetricChart("reward_margin", "reward margin")}
        self.charts = QTabWidget()
        self.charts.setDocumentMode(True)
        self.charts.addTab(self.chart, "Loss")
        self.charts.addTab(self.reward_charts["reward_accuracy"], "Reward accuracy")
        self.charts.addTab(self.reward_charts["reward_margin"], "Reward margin")
        rl.addWidget(self.charts, 3)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(2000)
        self.log.setPlaceholderText("The run's log appears here.")
        rl.addWidget(self.log, 1)
        return right

    # -- inputs ----------------------------------------------------------------------------

    def _show_inputs(self) -> None:
        if self.run_inputs is not None:  # a resumed run trains on its own model and data
            model, data = self.run_inputs
            self.inputs_label.setText(f"<b>Base model:</b> {_short(model)}<br>"
                                      f"<b>Dataset:</b> {html.escape(Path(data).name)} "
                                      "(this run's own, resumed)")
            return
        model = self.state.model or "none chosen (Model page)"
        data = (html.escape(Path(self.state.data).name) if self.state.data else
                "none chosen (Data page)")
        self.inputs_label.setText(f"<b>Base model:</b> {_short(model)}<br>"
                                  f"<b>Dataset:</b> {data}")

    def _on_inputs_changed(self, *_) -> None:
        if not self.running:
            self.run_inputs = None
        self._show_inputs()
        self._suggest_name()
        self._update_estimate()
        self.refresh()

    def _on_data_status(self, *_) -> None:
        report = self.state.report if self.state.data_status == "ok" else None
        checked = DataReport.coerce(report) if report else None
        self.form.train_examples = checked.train_examples if checked else 0
        self.form.train_stats = checked.train_stats if checked else None
        self.form.changed.emit()
        self.refresh()

    def _on_data_changed(self, *_) -> None:
        # A new dataset starts a new story: an old run's ending is no longer news (Resume
        # stays offered if that run has a checkpoint).
        if not self.running:
            self.view.banner = None
        self._on_inputs_changed()

    def model_problem(self) -> str | None:
        model = self.state.model
        if self._model_problem[0] != model:  # refresh runs at 10 Hz: read the folder once
            from .model import model_problem
            self._model_problem = (model, model_problem(model) if model else None)
        return self._model_problem[1]

    def start_problem(self) -> str | None:
        """Why Start is disabled, as the button's tooltip and the banner say it."""
        if not self.state.model:
            return "Choose a base model first (Model page)."
        problem = self.model_problem()
        if problem:
            return f"The base model cannot be used: {problem}. Choose another (Model page)."
        if not self.state.data:
            return "Choose a dataset first (Data page, or drop a file on the window)."
        if self.state.data_status == "failed":
            return (f"The dataset did not pass its check: {self.state.data_problem}. Fix it "
                    "or choose another (Data page).")
        return None

    def _suggest_name(self) -> None:
        if self.running or self.run_inputs is not None or (
                self.name_edit.text().strip() and self.name_edit.isModified()):
            return  # never rename what is running or being shown as resumed
        stem = Path(self.state.data).stem if self.state.data else "adapter"
        stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem).strip("-._")
        base = f"{stem or 'adapter'}-{time.strftime('%m%d')}"
        name, i = base, 2
        from engine.library import adapter_path
        try:
            while adapter_path(name).exists():
                name, i = f"{base}-{i}", i + 1
        except Exception:  # noqa: BLE001  (an odd library folder must not break the form)
            pass
        self.name_edit.setText(name)

    def preset_values(self) -> dict:
        return {**TrainConfig().to_dict(), **PRESETS.get(self.preset.currentData(), {})}

    def _apply_preset(self, *_) -> None:
        """Every value of the preset, the length mode included; validation back to auto."""
        self.form.eval_auto.setChecked(True)
        self.form.set_values(self.preset_values())

    def _update_preset_note(self) -> None:
        """The preset's summary, and what the form changed from it (nothing hidden)."""
        text = PRESET_HELP.get(self.preset.currentData(), "")
        preset, now = self.preset_values(), self.form.values()
        changed = []
        for name, value in now.items():
            if name == "eval_every" and self.form.eval_auto.isChecked():
                continue
            if name == "epochs" and now["iters"]:
                continue
            if value != preset.get(name) and not (
                    isinstance(value, float) and math.isclose(value, preset.get(name) or 0)):
                changed.append(f"{_label(name)} {value:g}" if isinstance(value, float) else
                               f"{_label(name)} {value}")
        if changed:
            text += " — changed here: " + ", ".join(changed)
        self.preset_help.setText(text)

    def settings_values(self) -> dict:
        return self.form.values()

    def _update_estimate(self) -> None:
        if self.running:
            return  # the engine's exact counts (Started) stay while the run is on
        folder = self.state.model_folder
        if folder is None:
            self.estimate_label.setText("Choose a base model to see the trainable parameters "
                                        "and memory needed.")
            return
        report = self.state.report if self.state.data_status == "ok" else None
        # the checked dataset's longest example: the preview is then the run's own figure
        est = estimate(read_model_config(folder), self.settings_values(),
                       longest=longest_in(report))
        if est is None:
            self.estimate_label.setText("No estimate: the model's config.json is unreadable.")
            return
        self.estimate_label.setText(est.summary(_machine_memory()))

    # -- running ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Buttons, banner, progress and counters from ``self.view`` and the last events."""
        v = self.view
        running = self.running
        problem = self.start_problem()
        self.start_button.setEnabled(not running and problem is None)
        self.start_button.setToolTip(problem or "start a new run with these settings")
        self.stop_button.setEnabled(running and v.state != JobState.STOPPING)
        can_resume = (not running and v.resumable and bool(v.name)
                      and v.state in (JobState.CANCELLED, JobState.FAILED, JobState.CRASHED))
        self.resume_button.setEnabled(can_resume)
        self.resume_button.setToolTip(
            f"continue “{v.name}” from its last checkpoint" if can_resume else
            "nothing to resume: no stopped run with a saved checkpoint")
        for w in (self.form, self.name_edit, self.preset):
            w.setEnabled(not running)
        e = self.last_step
        if e is not None:
            self.progress.setFormat("step %v of %m")
            self.progress.setMaximum(max(int(e.total_iterations), 1))
            self.progress.setValue(int(e.iteration))
        elif running and v.load is not None:
            self.progress.setMaximum(100)
            self.progress.setFormat(f"{v.load[0]}: %p%")
            self.progress.setValue(int(v.load[1]))
        else:  # nothing measured: no stale "load: 33%" after a failure
            self.progress.setMaximum(100)
            self.progress.setValue(0)
            self.progress.setFormat("starting…" if running else "")
        stats = dict.fromkeys(self.stat_labels, "–")
        if e is not None:
            stats.update(step=f"{e.iteration}/{e.total_iterations}",
                         epoch=f"{float(e.epoch):.2f}", loss=_num(e.train_loss),
                         mem=human_bytes(float(e.peak_memory_gb) * 1e9))
            if running:  # a speed and time left only while something is running
                stats.update(tps=f"{float(e.tokens_per_second):,.0f}",
                             eta=_fmt_eta(float(e.eta_seconds)))
        if self.last_valid is not None:
            stats["val"] = _num(self.last_valid.val_loss)
        for key, text in stats.items():
            if self.stat_labels[key].text() != text:
                self.stat_labels[key].setText(text)
        if v.banner is None:
            self.banner.clear()
        else:
            self.banner.show_message(*v.banner)

    def _say(self, kind: str, text: str, actions: list[tuple[str, str]] = ()) -> None:
        self.view.banner = (kind, text, list(actions))
        self.refresh()

    def start(self) -> bool:
        """Start a new run from the form; False (with a message) when something is missing."""
        if self.running:
            return False
        name = self.name_edit.text().strip()
        problem = self.start_problem()
        if problem is None:
            from engine.events import TailorError
            from engine.library import adapter_path
            try:
                if adapter_path(name).exists():
                    problem = (f"An adapter named “{name}” already exists; choose another "
                               "name (nothing is ever overwritten).")
            except TailorError as e:
                problem = e.message
        if problem:
            self._say("warn", html.escape(problem))
            return False
        argv = commands.train_command(self.state.model, self.state.data, name,
                                      self.settings_values(), strict=not self.state.skip_bad_lines,
                                      machines=self.machines.text())
        self._remember_defaults()
        self._launch(f"Train {name}", argv, name)
        return True

    def resume(self, name: str) -> None:
        """Continue ``name`` from its last checkpoint. A run this page did not just show (the
        Library, after a relaunch) first brings back its loss history and its own settings,
        so the chart goes on from the saved curve and the form shows what is running."""
        if not name or self.running:
            return
        if name != self.view.name or not len(self.history):
            self._load_run(name)
        self._launch(f"Resume {name}", self.resume_command(name), name, keep_history=True)

    def _load_run(self, name: str) -> None:
        from engine import library
        from engine.events import TailorError
        try:
            m = library.get_adapter(name).manifest
        except (TailorError, OSError):
            return  # the engine says what is wrong when the resume runs
        self.history.load(m.get("loss_history"))
        for chart in self.reward_charts.values():
            chart.load(m.get("metrics_history"))
        settings = {k: v for k, v in (m.get("settings") or {}).items() if k in self.form.widgets}
        if settings:
            self.form.eval_auto.setChecked(False)  # the run's own value, as it was recorded
            self.form.set_values(settings)
        self.name_edit.setText(name)
        base = m.get("base_model") or {}
        self.run_inputs = (str(base.get("repo_id") or base.get("path") or base.get("given")
                               or ""), str((m.get("dataset") or {}).get("path") or ""))
        self._show_inputs()

    def _launch(self, title: str, argv: list[str], name: str, keep_history: bool = False) -> None:
        if not keep_history:
            self.history.clear()
            for chart in self.reward_charts.values():
                chart.clear_points()
        self.last_step = self.last_valid = None
        self.log.clear()
        self.job = job = self.state.queue.submit(title, argv, heavy=True)
        self.view = RunView(state=JobState.QUEUED, name=name,
                            resumable=keep_history and self.view.resumable)
        w = job.worker
        w.started.connect(self._on_started)
        w.stepped.connect(self._on_step)
        w.validated.connect(self._on_validation)
        w.checkpointed.connect(self._on_checkpoint)
        _forward_metrics(w, self._on_metrics)
        w.logged.connect(lambda e: self._log(e.message if e.level in ("info", "stderr")
                                             else f"{e.level}: {e.message}"))
        # The buttons, banner and progress are derived from self.view in refresh().
        bind_job(job, self._on_finished, on_failure=self._on_failure,
                 on_cancelled=self._on_cancelled, on_progress=self._on_progress,
                 on_ended=self._on_ended)
        busy = self.state.queue.busy
        self._say("info", f"Training “{name}”…" if not busy else
                  f"“{name}” is queued: it starts when the current job ends.")

    def stop(self) -> None:
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)
            self.view.state = JobState.STOPPING
            self._say("info", "Stopping: saving a checkpoint you can resume…")

    @property
    def running(self) -> bool:
        return self.job is not None and not self.job.done

    def _log(self, line: str) -> None:
        self.log_lines.append(line)

    def _on_started(self, e) -> None:
        """The engine's exact counts and memory estimate replace the page's preview."""
        if self.view.state == JobState.QUEUED:
            self.view.state = JobState.RUNNING
            self._say("info", f"Training “{self.view.name}”…")
            self.state.library_changed.emit()  # the run is in the library from its start
        info = e.info or {}
        params = info.get("parameters") or {}
        mem = info.get("memory") or {}
        if params.get("trainable"):
            text = (f"{human_count(int(params['trainable']))} trainable of "
                    f"{human_count(int(params.get('total') or 0))} parameters (exact)")
            if mem.get("total_bytes"):
                text += f" · about {human_bytes(mem['total_bytes'])} memory"
            if mem.get("fits") is False and mem.get("suggestion"):
                text += f" — may not fit: {mem['suggestion']}"
            self.estimate_label.setText(text)
            self._log(f"started: {int(params['trainable']):,} trainable parameters")
        else:
            self._log("started")

    def _on_progress(self, e) -> None:
        if self.last_step is None and e.total:
            self.view.load = (e.stage, 100 * e.done / e.total)
        if e.message:
            self._log(f"{e.stage}: {e.message}")

    def _on_checkpoint(self, e) -> None:
        self.view.resumable = True
        self._log(f"checkpoint at step {e.iteration}")

    def _show_reward_tabs(self) -> None:
        """The reward tabs for a DPO/ORPO run, or while one is set up or has drawn metrics."""
        on = (self.form.values().get("objective", "sft") != "sft"
              or any(len(c) for c in self.reward_charts.values()))
        for i in (1, 2):
            self.charts.setTabVisible(i, on)
        self.charts.tabBar().setVisible(on)  # a lone "Loss" tab says nothing

    def _on_metrics(self, e) -> None:
        for chart in self.reward_charts.values():
            chart.add(e.iteration, e.split, e.values)
        self._show_reward_tabs()

    def _on_step(self, e) -> None:
        self.last_step = e
        self.history.add_train(e.iteration, e.train_loss)

    def _on_validation(self, e) -> None:
        self.last_valid = e
        self.history.add_valid(e.iteration, e.val_loss)
        self._log(f"step {e.iteration}: validation loss {float(e.val_loss):.4f}"
                  + (" (best so far)" if e.is_best else ""))

    def _refresh_live(self) -> None:
        """Labels, progress and log at ~10 Hz, however fast the events arrive."""
        if self.running or self.log_lines:
            self.refresh()
        if self.log_lines:
            self.log.appendPlainText("\n".join(self.log_lines[-2000:]))
            self.log_lines = []

    def _on_finished(self, result: TrainResult | dict | None) -> None:
        """The engine's TrainResult (a version-1 dict is read into one); a result without
        steps (an old worker's empty one) says "?" rather than 0."""
        r = TrainResult.coerce(result)
        best = r.best_val_loss
        self.view.banner = (
            "ok", f"Finished: “{self.run_name}” is in the Library after {r.steps or '?'} "
                  f"steps" + (f", best validation loss {_num(best)}." if best else "."),
            [("try", "Try it"), ("export", "Export it")])

    def _on_failure(self, message: str, hint: str, failed) -> None:
        """A failure the engine reported (``failed``), or a crash (None): its words, and
        Resume when a checkpoint is there to continue from."""
        self.view.resumable = self._has_checkpoint()
        if failed is not None:
            text = failure_html("Training failed", message, hint)
        else:
            text = (f"The training worker crashed: {html.escape(message)}"
                    + (f"<br>Suggestion: {html.escape(hint)}" if hint else ""))
        self.view.banner = ("error", text, [("resume", "Resume")] if self.view.resumable else [])

    def _on_cancelled(self, e) -> None:
        step = self.last_step.iteration if self.last_step else 0
        self.view.resumable = self._has_checkpoint()
        if self.view.resumable:
            self.view.banner = ("warn", f"Stopped at step {step}. A checkpoint was saved: "
                                "Resume continues where it left off.", [("resume", "Resume")])
        else:
            self.view.banner = ("warn", "Stopped before the first checkpoint: nothing to "
                                "resume; Start begins again.", [])

    def _has_checkpoint(self) -> bool:
        """A checkpoint this run wrote, or one left in the adapter's folder (a resumed run)."""
        if self.job is not None and self.job.worker.last_checkpoint is not None:
            return True
        from engine.library import adapter_path
        try:
            folder = adapter_path(self.view.name) / "checkpoints"
            return folder.is_dir() and any(folder.iterdir())
        except Exception:  # noqa: BLE001  (an unreadable library: nothing to offer)
            return False

    def _on_ended(self, state: JobState) -> None:
        self.view.state = state
        self.view.load = None
        self._refresh_live()
        self.refresh()
        self.state.library_changed.emit()

    def _on_banner_action(self, key: str) -> None:
        if key == "resume":
            self.resume(self.run_name)
        else:
            self.state.adapter_requested.emit(key, self.run_name)


@dataclasses.dataclass
class RunView:
    """The facts about the Train page's run that the widgets are derived from."""

    state: JobState = JobState.IDLE  # then queued, running, stopping, one of FINAL_STATES
    name: str = ""
    resumable: bool = False            # a checkpoint exists to continue from
    load: tuple[str, float] | None = None   # (stage, percent) before the first step
    banner: tuple[str, str, list] | None = None


def _num(v) -> str:
    try:
        return f"{float(v):.4f}"
    except (TypeError, ValueError):
        return str(v)


def _short(model: str) -> str:
    p = Path(model)
    return f"{p.name} <span style='color:gray'>({p.parent})</span>" if p.is_absolute() else model


def _machine_memory() -> int:
    import os
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0
