"""Small widgets the pages share: the live loss chart, a state banner, page headers, a table
model base."""
from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import (QAbstractTableModel, QModelIndex, QObject, QProcess, Qt, QTimer,
                            QUrl, Signal)
from PySide6.QtGui import QColor, QDesktopServices, QPalette, QTextDocument
from PySide6.QtWidgets import (QApplication, QFrame, QHBoxLayout, QLabel, QMessageBox, QPushButton,
                               QSizePolicy,
                               QVBoxLayout, QWidget)

from .history import LossHistory

pg.setConfigOptions(antialias=True)

TRAIN_COLOR = "#3b82f6"
VALID_COLOR = "#f97316"
COMPARE_COLORS = ("#a855f7", "#22c55e")


class RowTableModel(QAbstractTableModel):
    """A table of ``row_items()`` with the column titles ``HEADERS``; subclasses give ``data``."""

    HEADERS: tuple[str, ...] = ()

    def row_items(self) -> list:
        raise NotImplementedError

    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.row_items())

    def columnCount(self, parent=QModelIndex()) -> int:
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None


def reveal_in_file_manager(path: str | Path) -> None:
    """Show ``path`` in Finder (selected), or its folder in the platform's file manager."""
    path = Path(path)
    if sys.platform == "darwin":
        QProcess.startDetached("open", ["-R", str(path)])
    else:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path if path.is_dir() else path.parent)))


def copy_text(text: str) -> None:
    QApplication.clipboard().setText(text)


def page_header(title: str, explanation: str) -> QWidget:
    """A page title and the one-line explanation of the step (first-run help stays visible)."""
    w = QWidget()
    lay = QVBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 6)
    t = QLabel(title)
    f = t.font()
    f.setPointSizeF(f.pointSizeF() * 1.6)
    f.setBold(True)
    t.setFont(f)
    e = QLabel(explanation)
    e.setWordWrap(True)
    e.setObjectName("explanation")
    e.setForegroundRole(QPalette.ColorRole.PlaceholderText)
    lay.addWidget(t)
    lay.addWidget(e)
    return w


class _FollowSize(QObject):
    """Keeps ``child`` covering its parent as the parent is resized."""

    def __init__(self, child: QWidget, parent: QWidget):
        super().__init__(parent)
        self.child = child
        parent.installEventFilter(self)

    def eventFilter(self, obj, ev) -> bool:
        if ev.type() == ev.Type.Resize:
            self.child.setGeometry(obj.rect())
        return False


def show_empty(plot: pg.PlotWidget, empty: bool, text: str = "No data yet") -> None:
    """An empty chart says so, instead of drawing 0-1 axes that look like data."""
    label = getattr(plot, "_empty_label", None)
    if label is None:
        label = plot._empty_label = QLabel(text, plot)
        label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        label.setForegroundRole(QPalette.ColorRole.PlaceholderText)
        label.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents)
        plot._empty_follower = _FollowSize(label, plot)
    label.setGeometry(plot.rect())
    label.setVisible(empty)
    for axis in ("left", "bottom"):
        plot.getAxis(axis).setStyle(showValues=not empty)


def keep_tick_labels_inside(plot: pg.PlotWidget) -> None:
    """Room above the plot for half a tick label: the top value ("1.0") was cut in half."""
    half = plot.fontMetrics().height() // 2 + 2
    plot.getPlotItem().layout.setContentsMargins(2, half, 8, 2)


class LossChart(pg.PlotWidget):
    """Train and validation loss from one or more ``LossHistory`` objects, redrawn at most
    ``fps`` times a second and only when a history changed (keeps long runs smooth)."""

    def __init__(self, history: LossHistory | None = None, fps: int = 10, grid: bool = False,
                 parent=None):
        super().__init__(parent=parent)
        self.setMinimumHeight(180)
        self.setLabel("bottom", "step")
        self.setLabel("left", "loss")
        # The grid costs ~10 ms a repaint in software rendering (bench/ui_latency.py): only
        # for charts that do not redraw live.
        if grid:
            self.showGrid(x=True, y=True, alpha=0.15)
        self.addLegend(offset=(-10, 10))
        self.history = history if history is not None else LossHistory()  # empty is falsy
        # Antialiased 2 px lines take ~15 ms to paint 1000 points in Qt's raster engine, aliased
        # ones ~5 ms (bench/ui_latency.py); the noisy train curve looks the same either way.
        self.train_curve = self.plot([], [], name="train", pen=pg.mkPen(TRAIN_COLOR, width=2),
                                     antialias=False)
        self.valid_curve = self.plot([], [], name="validation",
                                     pen=pg.mkPen(VALID_COLOR, width=2),
                                     symbol="o", symbolSize=6, symbolBrush=VALID_COLOR)
        self.compare: list[tuple[LossHistory, object, object]] = []
        self._drawn = -1
        self.redraws = 0
        self.timer = QTimer(self)
        self.timer.setInterval(int(1000 / fps))
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self._apply_palette()
        keep_tick_labels_inside(self)
        show_empty(self, True)

    def _apply_palette(self) -> None:
        pal = self.palette()
        self.setBackground(pal.color(QPalette.ColorRole.Base))
        fg = pal.color(QPalette.ColorRole.Text)
        for axis in ("left", "bottom"):
            self.getAxis(axis).setTextPen(fg)
            self.getAxis(axis).setPen(pg.mkPen(fg.darker(130) if fg.lightness() > 128
                                               else fg.lighter(200)))

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        # pyqtgraph changes the palette inside its own __init__, before the plot exists.
        if ev.type() == ev.Type.PaletteChange and hasattr(self, "train_curve"):
            self._apply_palette()

    def set_compare(self, histories: list[tuple[str, LossHistory]]) -> None:
        """Overlay other runs' curves (dashed), e.g. to compare two adapters."""
        for _, tc, vc in self.compare:
            self.removeItem(tc)
            self.removeItem(vc)
        self.compare = []
        for i, (name, h) in enumerate(histories):
            color = COMPARE_COLORS[i % len(COMPARE_COLORS)]
            tc = self.plot([], [], name=f"{name} train",
                           pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine))
            vc = self.plot([], [], name=f"{name} validation", pen=None, symbol="t",
                           symbolSize=7, symbolBrush=color)
            self.compare.append((h, tc, vc))
        self._drawn = -1
        self.refresh()

    def version(self) -> int:
        return self.history.version + sum(h.version for h, _, _ in self.compare) * 7919 + \
            len(self.compare)

    def refresh(self) -> None:
        v = self.version()
        if v == self._drawn:
            return
        self._drawn = v
        self.redraws += 1
        self.train_curve.setData(*self.history.train_curve())
        self.valid_curve.setData(*self.history.valid_curve())
        for h, tc, vc in self.compare:
            tc.setData(*h.train_curve())
            vc.setData(*h.valid_curve())
        show_empty(self, not len(self.history) and not any(len(h) for h, _, _ in self.compare))

    def point_count(self) -> int:
        x, _ = self.train_curve.getData()
        return 0 if x is None else len(x)


_RAW = re.compile(r"^(internal error: )?([A-Za-z_][\w.]*(Error|Exception|Interrupt)\b|"
                  r"Traceback \(most recent call last\))")


def looks_raw(message: str) -> bool:
    """A Python exception's text ("ConnectionError: HTTPSConnectionPool(...)"), not a
    sentence meant for people."""
    return bool(_RAW.match(message.strip())) or "Traceback (most recent" in message


def error_html(message: str, hint: str = "", *, plain: str = "", plain_hint: str = "") -> str:
    """A failure as the banner shows it: the message, then the hint on its own line. A raw
    exception text is replaced by ``plain`` and ``plain_hint`` (the raw text stays in the
    log and the banner's tooltip)."""
    if looks_raw(message) and plain:
        message, hint = plain, plain_hint or hint
    text = html.escape(message.strip().rstrip("."))
    if hint:
        text += "<br>" + html.escape(hint.strip())
    return text


def confirm_box(parent, title: str, text: str, verb: str) -> tuple[QMessageBox, QPushButton]:
    """A question whose answer buttons say what they do ("Delete", "Cancel"), with Cancel the
    default and the Escape button: Return or Esc never does the irreversible thing."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle(title)
    box.setText(title)
    box.setInformativeText(text)
    act = box.addButton(verb, QMessageBox.ButtonRole.DestructiveRole
                        if verb in DESTRUCTIVE_VERBS else QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    act.setAutoDefault(False)
    return box, act


DESTRUCTIVE_VERBS = ("Delete", "Replace", "Stop and Quit")


def ask(parent, title: str, text: str, verb: str) -> bool:
    """True only when the verb button itself was clicked."""
    box, act = confirm_box(parent, title, text, verb)
    box.exec()
    return box.clickedButton() is act


def mix(a: QColor, b: QColor, t: float) -> QColor:
    """``a`` moved a fraction ``t`` towards ``b`` (opaque)."""
    return QColor(round(a.red() + (b.red() - a.red()) * t),
                  round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


def luminance(c: QColor) -> float:
    """WCAG relative luminance."""
    def lin(v: int) -> float:
        v = v / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    return 0.2126 * lin(c.red()) + 0.7152 * lin(c.green()) + 0.0722 * lin(c.blue())


def contrast_ratio(a: QColor, b: QColor) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


# Hues that say what a banner is about; their tint, the text and the border come from the
# current palette, so a banner reads the same in light and dark mode.
ACCENTS = {"ok": QColor(34, 160, 80), "warn": QColor(214, 140, 20),
           "error": QColor(220, 55, 55)}


def banner_colors(kind: str, palette: QPalette) -> tuple[QColor, QColor, QColor]:
    """(text, background, border) of a banner of ``kind`` in ``palette``."""
    window = palette.color(QPalette.ColorRole.Window)
    text = palette.color(QPalette.ColorRole.WindowText)
    accent = ACCENTS.get(kind, palette.color(QPalette.ColorRole.Highlight))
    return text, mix(window, accent, 0.16), accent


def highlight_colors(palette: QPalette) -> tuple[QColor, QColor]:
    """(text, background) of trained text in the Data page's preview."""
    base = palette.color(QPalette.ColorRole.Base)
    return palette.color(QPalette.ColorRole.Text), mix(base, palette.color(
        QPalette.ColorRole.Highlight), 0.30)


class Banner(QFrame):
    """A plain sentence about how something ended, with buttons for the next action."""

    action_clicked = Signal(str)
    LINES = 3  # the tallest message; a longer one is cut, and reads whole in the tooltip

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(10, 6, 10, 6)
        self.label = QLabel()
        self.label.setTextFormat(Qt.TextFormat.RichText)  # never a literal <br> on screen
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        lay.addWidget(self.label, 1)
        self.buttons: dict[str, QPushButton] = {}
        self.button_row = QHBoxLayout()
        lay.addLayout(self.button_row)
        self.kind = ""
        self._shown: tuple | None = None
        self._styling = False
        # Its space is kept whether or not it shows, and it is as tall for one line as for
        # three, so a message never moves the buttons below it (a click then missed).
        policy = self.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        policy.setVerticalPolicy(QSizePolicy.Policy.Fixed)
        self.setSizePolicy(policy)
        self.setFixedHeight(self.fontMetrics().lineSpacing() * self.LINES + 16)
        self.hide()

    def _apply_palette(self) -> None:
        # The application's palette, not this frame's own (the style sheet below changes it,
        # and a parent's may not have heard of a scheme change yet).
        fg, bg, border = banner_colors(self.kind, QApplication.palette())
        sheet = (f"Banner {{ background: {bg.name()}; border: 1px solid "
                 f"{border.name()}; border-radius: 6px; }} "
                 f"QLabel {{ color: {fg.name()}; }}")
        if sheet != self.styleSheet():  # a style sheet change re-polishes: no loop
            self.setStyleSheet(sheet)

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        if ev.type() == ev.Type.PaletteChange and self._shown is not None and \
                not self._styling:
            self._styling = True
            try:
                self._apply_palette()
            finally:
                self._styling = False

    def clear(self) -> None:
        """No message: hidden, and ``kind``/``text()`` empty, so nothing stale is read back."""
        self._shown = None
        self.kind = ""
        self.label.setText("")
        for b in self.buttons.values():
            b.deleteLater()
        self.buttons = {}
        self.hide()

    def show_message(self, kind: str, text: str, actions: list[tuple[str, str]] = ()) -> None:
        shown = (kind, text, tuple(actions))
        if shown == self._shown and not self.isHidden():
            return  # pages re-derive their banner on every refresh: keep the same buttons
        self._shown = shown
        self.kind = kind
        self._apply_palette()
        self.label.setText(text)
        self.label.setToolTip(self.plain_text())
        for b in self.buttons.values():
            b.deleteLater()
        self.buttons = {}
        for key, label in actions:
            b = QPushButton(label)
            b.clicked.connect(lambda _=False, k=key: self.action_clicked.emit(k))
            self.button_row.addWidget(b)
            self.buttons[key] = b
        self.show()

    def text(self) -> str:
        return self.label.text()

    def plain_text(self) -> str:
        """What a person reads (the markup rendered)."""
        doc = QTextDocument()
        doc.setHtml(self.label.text())
        return doc.toPlainText()


class MetricChart(pg.PlotWidget):
    """One preference metric (reward accuracy or margin) per step (train) and per validation,
    from ``Metrics`` events or a manifest's ``metrics_history``; "No data yet" while empty."""

    def __init__(self, key: str, label: str, parent=None):
        super().__init__(parent=parent)
        self.key = key
        self.setMinimumHeight(140)
        self.setLabel("bottom", "step")
        self.setLabel("left", label)
        self.addLegend(offset=(-10, 10))
        self.points: dict[str, tuple[list[int], list[float]]] = {"train": ([], []),
                                                                 "valid": ([], [])}
        self.train_curve = self.plot([], [], name="train", pen=pg.mkPen(TRAIN_COLOR, width=2),
                                     antialias=False)
        self.valid_curve = self.plot([], [], name="validation", pen=pg.mkPen(VALID_COLOR, width=2),
                                     symbol="o", symbolSize=6, symbolBrush=VALID_COLOR)
        if key == "reward_accuracy":  # a share of pairs: 0-1 always, so 0.55 does not look like 1
            self.setYRange(0.0, 1.0)
            self.getPlotItem().enableAutoRange(y=False)
        LossChart._apply_palette(self)
        keep_tick_labels_inside(self)
        show_empty(self, True)

    def changeEvent(self, ev) -> None:
        super().changeEvent(ev)
        if ev.type() == ev.Type.PaletteChange and hasattr(self, "train_curve"):
            LossChart._apply_palette(self)

    def __len__(self) -> int:
        return sum(len(xs) for xs, _ in self.points.values())

    def add(self, iteration: int, split: str, values: dict) -> None:
        """One event's value; None (every pair tied) and missing keys draw nothing."""
        v = (values or {}).get(self.key)
        if v is None or split not in self.points:
            return
        xs, ys = self.points[split]
        xs.append(int(iteration))
        ys.append(float(v))
        (self.train_curve if split == "train" else self.valid_curve).setData(xs, ys)
        show_empty(self, False)

    def clear_points(self) -> None:
        for xs, ys in self.points.values():
            xs.clear()
            ys.clear()
        self.train_curve.setData([], [])
        self.valid_curve.setData([], [])
        show_empty(self, True)

    def load(self, history) -> None:
        """A manifest's ``metrics_history``: {"train": [[step, values], ...], "valid": [...]}."""
        self.clear_points()
        for split, records in (history or {}).items():
            for rec in records or []:
                if isinstance(rec, (list, tuple)) and len(rec) == 2:
                    self.add(rec[0], split, rec[1])
