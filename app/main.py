"""Start the app: ``tailor`` with no arguments (see launcher.py), or ``python -m app``."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QSettings, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def make_app(argv: list[str]) -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setOrganizationName("Tailor")
    app.setOrganizationDomain("tailor.local")
    app.setApplicationName("Tailor")
    app.setApplicationDisplayName("Tailor")
    if sys.platform != "darwin":
        # On macOS the native style follows the system's dark mode by itself; elsewhere Fusion
        # gets a palette for the scheme the platform reports, and changes with it.
        app.setStyle("Fusion")
        apply_color_scheme(app)
        app.styleHints().colorSchemeChanged.connect(lambda _: apply_color_scheme(app))
    return app


def dark_palette() -> QPalette:
    p = QPalette()
    base, window, text = QColor(30, 31, 34), QColor(43, 45, 48), QColor(223, 225, 229)
    R = QPalette.ColorRole
    for role, color in ((R.Window, window), (R.WindowText, text), (R.Base, base),
                        (R.AlternateBase, window), (R.ToolTipBase, window),
                        (R.ToolTipText, text), (R.Text, text), (R.Button, window),
                        (R.ButtonText, text), (R.BrightText, QColor(255, 90, 90)),
                        (R.Highlight, QColor(47, 101, 202)), (R.HighlightedText, Qt.white),
                        (R.Link, QColor(110, 160, 255)),
                        (R.PlaceholderText, QColor(140, 143, 150))):
        p.setColor(role, color)
    for role in (R.WindowText, R.Text, R.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 122, 128))
    return p


def apply_color_scheme(app: QApplication) -> None:
    """Dark palette when the platform says dark (or $TAILOR_COLOR_SCHEME=dark overrides)."""
    forced = os.environ.get("TAILOR_COLOR_SCHEME", "").lower()
    dark = forced == "dark" if forced in ("dark", "light") else \
        app.styleHints().colorScheme() == Qt.ColorScheme.Dark
    app.setPalette(dark_palette() if dark else app.style().standardPalette())


def apply_library_folder(settings: QSettings) -> None:
    """The Preferences' library folder becomes TAILOR_HOME for this app and its workers
    (an explicit $TAILOR_HOME wins)."""
    folder = str(settings.value("library/folder", "") or "")
    if folder and not os.environ.get("TAILOR_HOME"):
        os.environ["TAILOR_HOME"] = folder


class FileOpenFilter(QObject):
    """A file or folder dropped on the Dock icon, or opened with Tailor from Finder, reaches the
    application as a QFileOpenEvent (macOS); it opens like a drop on the window. Events that
    arrive before the window exists (Tailor launched by the drop) wait for ``attach``."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.window = None
        self.pending: list[Path] = []

    def eventFilter(self, obj, event) -> bool:
        if event.type() != QEvent.Type.FileOpen:
            return False
        path = Path(event.file())
        if self.window is None:
            self.pending.append(path)
        else:
            self.window.open_paths([path])
        return True

    def attach(self, window) -> None:
        self.window = window
        pending, self.pending = self.pending, []
        for path in pending:
            window.open_paths([path])


def main(argv: list[str] | None = None) -> int:
    app = make_app(list(argv or []))
    opener = FileOpenFilter(app)
    app.installEventFilter(opener)
    settings = QSettings()
    apply_library_folder(settings)
    from .main_window import MainWindow

    window = MainWindow(settings)
    window.show()
    opener.attach(window)
    sweep_at_start(window)
    return app.exec()


def sweep_at_start(window) -> str:
    """Remove what killed jobs left in the library (engine/sweep.py); say so in the status
    bar. Returns the message ("" when nothing was removed)."""
    from engine import sweep

    try:
        message = sweep.summary(sweep.sweep_library())
    except Exception:  # noqa: BLE001 - tidying up must never stop the app from starting
        return ""
    if message:
        window.statusBar().showMessage(message[0].upper() + message[1:], 30_000)
    return message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
