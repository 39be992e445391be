"""Start the app: ``tailor`` with no arguments (see launcher.py), or ``python -m app``."""
from __future__ import annotations

import os
import sys

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication


def make_app(argv: list[str]) -> QApplication:
    app = QApplication.instance() or QApplication([sys.argv[0], *argv])
    app.setOrganizationName("Tailor")
    app.setOrganizationDomain("tailor.local")
    app.setApplicationName("Tailor")
    app.setApplicationDisplayName("Tailor")
    if sys.platform != "darwin":
        # Fusion follows the system colour scheme (dark mode) on Linux and Windows; on macOS
        # the native style does that itself.
        app.setStyle("Fusion")
    return app


def apply_library_folder(settings: QSettings) -> None:
    """The Preferences' library folder becomes TAILOR_HOME for this app and its workers
    (an explicit $TAILOR_HOME wins)."""
    folder = str(settings.value("library/folder", "") or "")
    if folder and not os.environ.get("TAILOR_HOME"):
        os.environ["TAILOR_HOME"] = folder


def main(argv: list[str] | None = None) -> int:
    app = make_app(list(argv or []))
    settings = QSettings()
    apply_library_folder(settings)
    from .main_window import MainWindow

    window = MainWindow(settings)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
