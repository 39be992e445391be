"""The Library's Evaluate tab: the selected adapter's latest kept evaluation (the verdict, the
scores of base and adapter, every held-out answer beside the reference, the worse ones
first), and an Evaluate button that runs `tailor eval` as a job."""
from __future__ import annotations

import html

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton,
                               QSpinBox, QTextBrowser, QVBoxLayout, QWidget)

from engine.evaluate.record import latest_report
from engine.results import EvalReport

from . import commands
from .job_binding import bind_job
from .widgets import Banner

DEFAULT_LIMIT = 64  # as `tailor eval`'s --limit


def eval_command(adapter: str, limit: int = DEFAULT_LIMIT, probe: bool = True,
                 parity: bool = False, python: str | None = None) -> list[str]:
    """The worker's argv for `tailor eval` on ``adapter`` (the run's own validation split)."""
    args = ["--adapter", adapter]
    if limit != DEFAULT_LIMIT:
        args += ["--limit", str(limit)]
    if not probe:
        args.append("--no-probe")
    if parity:
        args.append("--parity")
    return commands.engine_argv("eval", *args, python=python)


def _num(v, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def report_html(r: EvalReport) -> str:
    """The report for the tab: verdict, a scores table, the answers side by side."""
    e = html.escape
    b, t = r.base, r.tuned
    rows = [("Loss", _num(b.loss), _num(t.loss)),
            ("Perplexity", _num(b.perplexity, ".4g"), _num(t.perplexity, ".4g")),
            ("Exact match", _num(b.exact_match, ".0%"), _num(t.exact_match, ".0%")),
            ("Token F1", _num(b.f1, ".2f"), _num(t.f1, ".2f")),
            ("ROUGE-L", _num(b.rouge_l, ".2f"), _num(t.rouge_l, ".2f")),
            ("Answer length (words)", _num(b.answer_words, ".1f"), _num(t.answer_words, ".1f"))]
    scores = "".join(f"<tr><td><b>{e(k)}</b></td><td>{e(x)}</td><td>{e(y)}</td></tr>"
                     for k, x, y in rows)
    out = [f"<p><b>{e(r.verdict)}</b></p>",
           f"<p style='color:gray'>{e(r.data.get('path', ''))} ({e(str(r.data.get('split')))}, "
           f"{len(r.examples)} examples, seed {e(str(r.settings.get('seed', 0)))}) · "
           f"report {e(r.id)}</p>",
           "<table cellspacing=6><tr><th></th><th>Base</th><th>With the adapter</th></tr>"
           f"{scores}</table>"]
    for extra in (r.probe, r.parity):
        if extra is not None:
            out.append(f"<p><b>{e(extra.verdict)}</b></p>")
    out.append("<h4>Answers (where the adapter got worse first)</h4><table cellspacing=6 "
               "border=1><tr><th>Prompt</th><th>Reference</th><th>Base</th>"
               "<th>With the adapter</th></tr>")
    for x in r.examples:
        mark = " <span style='color:#c0392b'>(worse)</span>" if x.worse else ""
        out.append(f"<tr><td>{e(x.prompt or x.source)}{mark}</td><td>{e(x.reference)}</td>"
                   f"<td>{e(x.base_answer)}</td><td>{e(x.adapter_answer)}</td></tr>")
    out.append("</table>")
    return "".join(out)


class EvaluationView(QWidget):
    """Shows ``show_adapter(info)``'s latest report; Evaluate runs a new one."""

    evaluated = Signal(str)  # the adapter whose new report was kept

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.adapter = None
        self.job = None
        lay = QVBoxLayout(self)
        row = QHBoxLayout()
        self.button = QPushButton("Evaluate")
        self.button.setToolTip("score the adapter against its base on the run's held-out "
                               "examples (`tailor eval`); the report is kept with the adapter")
        self.button.clicked.connect(lambda: self.start())
        row.addWidget(self.button)
        row.addWidget(QLabel("examples"))
        self.limit_box = QSpinBox()
        self.limit_box.setRange(0, 100000)
        self.limit_box.setValue(DEFAULT_LIMIT)
        self.limit_box.setToolTip("evaluate at most this many held-out examples (0: all)")
        row.addWidget(self.limit_box)
        self.probe_box = QCheckBox("Forgetting probe")
        self.probe_box.setChecked(True)
        self.probe_box.setToolTip("also ask general questions, base against adapter")
        row.addWidget(self.probe_box)
        self.parity_box = QCheckBox("Shipped files")
        self.parity_box.setToolTip("also compare the fused model and every GGUF exported from "
                                   "this adapter with the adapter in MLX")
        row.addWidget(self.parity_box)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        row.addStretch(1)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.hide()
        lay.addWidget(self.progress)
        self.banner = Banner()
        lay.addWidget(self.banner)
        self.view = QTextBrowser()
        lay.addWidget(self.view, 1)
        self.show_adapter(None)

    def show_adapter(self, info) -> None:
        """The latest report of the library adapter ``info`` (None: nothing selected)."""
        self.adapter = info
        running = self.job is not None and not self.job.done
        self.button.setEnabled(info is not None and info.weights.exists() and not running)
        if info is None:
            self.view.setHtml("<p style='color:gray'>No adapter selected.</p>")
            return
        report = latest_report(info.path)
        if report is None:
            self.view.setHtml("<p style='color:gray'>Not evaluated yet. Evaluate compares "
                              "the adapter with its base on the run's held-out examples.</p>")
        else:
            self.view.setHtml(report_html(report))

    def argv(self) -> list[str]:
        return eval_command(self.adapter.name, self.limit_box.value(),
                            self.probe_box.isChecked(), self.parity_box.isChecked())

    def start(self, argv: list[str] | None = None) -> None:
        """Run `tailor eval` on the shown adapter (``argv``: a stand-in worker's, for tests)."""
        if self.adapter is None:
            return
        name = self.adapter.name
        self.job = job = self.state.queue.submit(f"Evaluate {name}", argv or self.argv())
        bind_job(job, lambda result: self._on_result(name, result), banner=self.banner,
                 progress=self.progress, disable=[self.button], enable=[self.cancel_button],
                 running=f"Evaluating “{html.escape(name)}”…", failed="Evaluation refused",
                 crashed="The evaluation worker crashed",
                 cancelled="Evaluation cancelled; nothing was kept.")

    def cancel(self) -> None:
        if self.job is not None and not self.job.done:
            self.state.queue.cancel(self.job)

    def _on_result(self, name: str, result) -> None:
        report = EvalReport.coerce(result)
        self.banner.show_message("ok", html.escape(report.verdict))
        if self.adapter is not None and self.adapter.name == name:
            self.view.setHtml(report_html(report))
        self.evaluated.emit(name)
