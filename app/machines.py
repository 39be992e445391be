"""The Train page's "Several Macs" section: the Machines field (-> `tailor train`'s --ranks/
--hosts; engine/train/launch.py runs mlx.launch with them; empty: this Mac alone) and "Test
connection", which runs the launcher's own host checks (`tailor hosts check`, in an engine
worker process like every job) and shows each host: reachable, Tailor and MLX versions, the
model and the dataset there (or that the dataset will be copied), and for a failure its message
and hint."""
from __future__ import annotations

import html

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QGroupBox, QHBoxLayout, QLabel, QLineEdit, QPushButton,
                               QScrollArea, QVBoxLayout)

from engine.results import (DATASET_COPY_THERE, DATASET_SAME, DATASET_WILL_COPY, HostCheck,
                            HostsReport)

from .commands import engine_argv
from .job_binding import bind_job

MACHINES_TOOLTIP = ("train on several Macs at once (data-parallel, MLX's mlx.launch): host "
                    "names separated by commas (this Mac first, each reachable by ssh "
                    "without a password), or the path of an MLX host file; a number N runs N "
                    "processes on this Mac. Empty: this Mac alone")
NOTHING_TO_TEST = "This Mac only: there is no other machine to test."
STATUS_MAX_HEIGHT = 150  # pixels; more scrolls


def machines_argv(text: str) -> list[str]:
    """The flags for what the field holds."""
    text = text.strip()
    if not text:
        return []
    if text.isdigit():
        return ["--ranks", text] if int(text) > 1 else []
    return ["--hosts", text]


def hosts_check_command(hosts: str, model: str = "", data: str = "",
                        python: str | None = None) -> list[str]:
    """`tailor hosts check --hosts H [--model M] [--data D]`."""
    args = ["check", "--hosts", hosts]
    if model:
        args += ["--model", str(model)]
    if data:
        args += ["--data", str(data)]
    return engine_argv("hosts", *args, python=python)


def host_html(h: HostCheck) -> str:
    """One host's line (and, when it failed, its message and hint)."""
    name = "<b>%s</b>" % html.escape(h.host) + (" (this Mac, no ssh)" if h.local else "")
    if not h.reachable:
        return (f"✗ {name}: not reachable<br>&nbsp;&nbsp;{html.escape(h.message)}"
                f"<br>&nbsp;&nbsp;<i>{html.escape(h.hint)}</i>")
    parts = [f"Tailor {html.escape(h.tailor or '?')}", f"MLX {html.escape(h.mlx or '?')}"]
    if h.model:
        parts.append("model found" if h.model == "present" else f"model {html.escape(h.model)}")
    if h.dataset == DATASET_SAME:
        parts.append("dataset identical")
    elif h.dataset == DATASET_WILL_COPY:
        parts.append("dataset will be copied")
    elif h.dataset == DATASET_COPY_THERE:
        parts.append("dataset copied earlier")
    elif h.dataset:
        parts.append(f"dataset {html.escape(h.dataset)}")
    line = f"{'✓' if h.ok else '✗'} {name}: reachable, " + ", ".join(parts)
    if not h.ok:
        line += (f"<br>&nbsp;&nbsp;{html.escape(h.message)}"
                 f"<br>&nbsp;&nbsp;<i>{html.escape(h.hint)}</i>")
    return line


def report_html(report: HostsReport) -> str:
    seen, lines = set(), []
    for h in report.hosts:  # a host listed twice (two ranks) is checked once
        if h.host not in seen:
            seen.add(h.host)
            lines.append(host_html(h))
    verdict = ("Ready: every host can take part." if report.ok
               else "Not ready: fix the host marked ✗ first.")
    return "<br>".join([f"<b>{verdict}</b>"] + lines)  # first: a long report scrolls


class SeveralMacs(QGroupBox):
    """The section; ``field`` is the Machines line edit the page reads at Start."""

    def __init__(self, state, settings=None, parent=None):
        super().__init__("Several Macs", parent)
        self.state = state
        self.settings = settings  # QSettings: the host list is kept for the next launch
        self.report: HostsReport | None = None
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.field = QLineEdit()
        self.field.setPlaceholderText("this Mac only")
        self.field.setToolTip(MACHINES_TOOLTIP)
        if settings is not None:
            self.field.setText(str(settings.value("train/machines", "") or ""))
        self.field.textChanged.connect(self._forget)
        row.addWidget(self.field, 1)
        self.test_button = QPushButton("Test connection")
        self.test_button.setToolTip("check each host over ssh as Start would: reachable, the "
                                    "same Tailor and MLX, the base model and dataset there")
        self.test_button.clicked.connect(self.test_connection)
        row.addWidget(self.test_button)
        layout.addLayout(row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextFormat(Qt.TextFormat.RichText)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long report scrolls in its own box: at 1024x700 three hosts with hints left the
        # settings form four rows
        self.status_box = QScrollArea()
        self.status_box.setWidgetResizable(True)
        self.status_box.setFrameShape(QScrollArea.Shape.NoFrame)
        self.status_box.setWidget(self.status)
        self.status_box.setMaximumHeight(STATUS_MAX_HEIGHT)
        self.status_box.hide()
        layout.addWidget(self.status_box)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        self.status_box.setVisible(bool(text))
        if text:  # as tall as the text, up to STATUS_MAX_HEIGHT
            width = max(self.status_box.viewport().width(), 200)
            self.status_box.setFixedHeight(min(STATUS_MAX_HEIGHT,
                                               self.status.heightForWidth(width) + 4))

    def _forget(self) -> None:
        self.report = None
        self._say("")
        if self.settings is not None:
            self.settings.setValue("train/machines", self.field.text().strip())

    def test_connection(self) -> bool:
        """Run the host checks in a worker; False when there is nothing to check."""
        argv = machines_argv(self.field.text())
        if not argv or argv[0] == "--ranks":
            self._say(NOTHING_TO_TEST if not argv else
                      f"{argv[1]} processes on this Mac: no connection to test.")
            return False
        job = self.state.queue.submit("Test connection",
                                      hosts_check_command(argv[1], self.state.model,
                                                          self.state.data), heavy=False)
        self._say("Checking the hosts over ssh…")
        bind_job(job, self.show_report, disable=[self.test_button],
                 on_failure=lambda message, hint, _: self._say(
                     f"✗ {html.escape(message)}<br><i>{html.escape(hint)}</i>"))
        return True

    def show_report(self, report: HostsReport | dict | None) -> None:
        self.report = HostsReport.coerce(report)
        self._say(report_html(self.report))
