"""Merge: the adapters selected in the Library, one weight each, a method and its settings
(tooltips from the engine's own help text), run as `tailor merge` with its progress; the new
adapter then appears in the Library with its lineage."""
from __future__ import annotations

import dataclasses
import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDialog, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                               QVBoxLayout)

from engine.library import MAX_NAME_LEN
from engine.merge.config import DARE_COMBINE, METHODS, MergeConfig
from engine.results import MergeResult

from . import commands
from .job_binding import bind_job
from .widgets import Banner

HELP = {f.name: f.metadata.get("help", "") for f in dataclasses.fields(MergeConfig)}
DEFAULTS = MergeConfig()


def merge_command(names: list[str], new_name: str, weights: list[float], settings: dict,
                  python: str | None = None) -> list[str]:
    """`tailor merge A B ... --name NEW --weights W1,W2 [settings...]` (defaults left out)."""
    flags = commands.dataclass_flags(MergeConfig, {k: v for k, v in settings.items()
                                                   if k != "weights"})
    return commands.engine_argv("merge", *names, "--name", new_name, "--weights",
                                ",".join(commands._fmt(float(w)) for w in weights), *flags,
                                python=python)


def lineage_html(manifest: dict) -> str:
    """"Merged from a (0.7) + b (0.3) by ties, ..." for a merged adapter's record; "" else."""
    merge = manifest.get("merge") or {}
    if not merge:
        return ""
    parents = " + ".join(f"<b>{html.escape(str(p.get('name')))}</b> ({p.get('weight'):g})"
                         for p in merge.get("parents") or [])
    s = merge.get("settings") or {}
    how = {"linear": f"rank {merge.get('rank')}",
           "ties": f"density {s.get('density')}, rank {merge.get('rank')}",
           "dare": f"density {s.get('density')}, {s.get('dare_combine')}, seed {s.get('seed')}, "
                   f"rank {merge.get('rank')}"}.get(merge.get("method"), "exact")
    kept = merge.get("min_energy_kept")
    kept = "" if merge.get("exact") or kept is None else \
        f"; keeps {100 * kept:.1f}% of the change in the worst layer"
    return f"<p>Merged from {parents} by <b>{html.escape(str(merge.get('method')))}</b> " \
           f"({html.escape(how)}{kept})</p>"


def merge_button(on_click) -> QPushButton:
    """The Library's "Merge…" button, disabled until two or more adapters are selected."""
    button = QPushButton("Merge…")
    button.setToolTip("combine the selected adapters (select two or more) into a new adapter")
    button.clicked.connect(on_click)
    button.setEnabled(False)
    return button


class MergeDialog(QDialog):
    """Choose weights, method and settings for the selected adapters and run the merge."""

    merged = Signal(str)  # the new adapter's name, once it is in the library

    def __init__(self, state, names: list[str], parent=None):
        super().__init__(parent)
        self.setWindowTitle("Merge adapters")
        self.state = state
        self.names = list(names)
        self.job = None
        self.result: MergeResult | None = None
        self._build()
        self._on_method()

    def _build(self) -> None:
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"Combine {len(self.names)} adapters of one base model into a "
                             "new adapter."))
        form = QFormLayout()
        self.weight_boxes: list[QDoubleSpinBox] = []
        for name in self.names:
            box = QDoubleSpinBox()
            box.setRange(-10.0, 10.0)
            box.setSingleStep(0.1)
            box.setDecimals(3)
            box.setValue(1.0)
            box.setToolTip(HELP["weights"])
            form.addRow(f"Weight of “{name}”", box)
            self.weight_boxes.append(box)
        self.method_box = QComboBox()
        for m in METHODS:
            self.method_box.addItem(m, m)
        self.method_box.setToolTip(HELP["method"])
        self.method_box.currentIndexChanged.connect(self._on_method)
        form.addRow("Method", self.method_box)
        self.rank_box = QSpinBox()
        self.rank_box.setRange(0, 65536)
        self.rank_box.setSpecialValueText("auto (largest parent's)")
        self.rank_box.setToolTip(HELP["rank"])
        form.addRow("Rank", self.rank_box)
        self.density_box = QDoubleSpinBox()
        self.density_box.setRange(0.01, 1.0)
        self.density_box.setSingleStep(0.05)
        self.density_box.setValue(DEFAULTS.density)
        self.density_box.setToolTip(HELP["density"])
        form.addRow("Density", self.density_box)
        self.combine_box = QComboBox()
        for c in DARE_COMBINE:
            self.combine_box.addItem(c, c)
        self.combine_box.setToolTip(HELP["dare_combine"])
        form.addRow("DARE then", self.combine_box)
        self.seed_box = QSpinBox()
        self.seed_box.setRange(0, 2**31 - 1)
        self.seed_box.setToolTip(HELP["seed"])
        form.addRow("Seed", self.seed_box)
        self.name_edit = QLineEdit("-".join(self.names + ["merge"])[:MAX_NAME_LEN])
        self.name_edit.setToolTip("the new adapter's name in the library (must not exist)")
        form.addRow("New adapter", self.name_edit)
        lay.addLayout(form)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.progress = QProgressBar()
        self.progress.hide()
        lay.addWidget(self.progress)
        row = QHBoxLayout()
        row.addStretch(1)
        self.merge_button = QPushButton("Merge")
        self.merge_button.setDefault(True)
        self.merge_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        row.addWidget(self.merge_button)
        lay.addLayout(row)

    def _on_method(self, *_) -> None:
        """Only the settings the chosen method reads are editable."""
        method = self.method_box.currentData()
        self.rank_box.setEnabled(method != "concat")
        self.density_box.setEnabled(method in ("ties", "dare"))
        self.combine_box.setEnabled(method == "dare")
        self.seed_box.setEnabled(method == "dare")

    def settings(self) -> dict:
        return {"method": self.method_box.currentData(), "rank": self.rank_box.value(),
                "density": round(self.density_box.value(), 4),
                "dare_combine": self.combine_box.currentData(), "seed": self.seed_box.value()}

    def argv(self) -> list[str]:
        return merge_command(self.names, self.name_edit.text().strip(),
                             [b.value() for b in self.weight_boxes], self.settings())

    def start(self, argv: list[str] | None = None) -> None:
        """Run the merge (``argv``: a stand-in worker's, for tests)."""
        name = self.name_edit.text().strip()
        if not name:
            self.banner.show_message("warn", "Give the new adapter a name.")
            return
        self.job = job = self.state.queue.submit(f"Merge into {name}", argv or self.argv())
        bind_job(job, self._on_merged, banner=self.banner, progress=self.progress,
                 disable=[self.merge_button], running=f"Merging into {html.escape(name)}…",
                 failed="Merge refused", crashed="The merge worker crashed",
                 cancelled="Merge cancelled; nothing was written.")

    def cancel(self) -> None:
        """Stop a running merge (nothing is left behind), else close the dialog."""
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)
        else:
            self.reject()

    def _on_merged(self, result) -> None:
        self.result = result = MergeResult.coerce(result)
        kept = "" if result.exact or result.min_energy_kept is None else (
            f" It keeps {100 * result.min_energy_kept:.1f}% of the merged change in its worst "
            "layer.")
        self.banner.show_message("ok", f"Merged into “{html.escape(result.adapter)}”.{kept}")
        self.cancel_button.setText("Close")
        self.state.library_changed.emit()
        self.merged.emit(result.adapter)
