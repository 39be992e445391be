"""A dataset dropped on the Dock icon (a QFileOpenEvent on macOS) opens on the Data page."""
from __future__ import annotations

from PySide6.QtGui import QFileOpenEvent
from PySide6.QtWidgets import QApplication

from app.main import FileOpenFilter
from tests.app.conftest import small_chat_dataset


def test_a_file_opened_from_finder_before_and_after_the_window_exists(qtbot, window, tmp_path):
    app = QApplication.instance()
    opener = FileOpenFilter(app)
    app.installEventFilter(opener)
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        first = small_chat_dataset(tmp_path / "a")
        window.show_page("Model")
        # launched by the drop: the event comes before the window is attached, and waits
        QApplication.sendEvent(app, QFileOpenEvent(str(first)))
        assert opener.pending == [first]
        assert window.state.data != str(first)
        opener.attach(window)
        assert opener.pending == []
        assert window.state.data == str(first)
        assert window.stack.currentWidget() is window.pages["Data"]

        window.show_page("Model")
        second = small_chat_dataset(tmp_path / "b")
        QApplication.sendEvent(app, QFileOpenEvent(str(second)))
        assert window.state.data == str(second)
        assert window.stack.currentWidget() is window.pages["Data"]
    finally:
        app.removeEventFilter(opener)
