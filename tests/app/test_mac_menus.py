"""Issue 14, Mac conventions: Edit and Help keep standard items (a Mac moves Preferences and
About into the application menu), a Window menu, Help opens the quick start, and a dragged
file shows where it can be dropped."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragLeaveEvent
from PySide6.QtWidgets import QApplication

pytestmark = [pytest.mark.gui]


def menu(window, title: str) -> list[str]:
    for action in window.menuBar().actions():
        if action.text().replace("&", "") == title:
            return [a.text() for a in action.menu().actions() if not a.isSeparator()]
    raise AssertionError(f"no {title} menu")


def test_standard_menus_are_never_empty_on_a_mac(qtbot, window):
    edit = menu(window, "Edit")
    assert {"Undo", "Cut", "Copy", "Paste", "Select All"} <= set(edit)
    # What stays once Qt moves the Preferences/About roles into the application menu:
    assert [t for t in edit if t != "Preferences…"]
    assert [t for t in menu(window, "Help") if t != "About Tailor"] == ["Tailor Quick Start"]
    assert {"Minimize", "Zoom", "Model", "Export"} <= set(menu(window, "Window"))

    opened = []
    window.opener = opened.append
    next(a for a in window.findChildren(type(window.menuBar().actions()[0]))
         if a.text() == "Tailor Quick Start").trigger()
    assert opened and opened[0].isLocalFile() and opened[0].fileName() == "README.md"
    assert opened[0].fragment() == "quick-start-on-a-mac-apple-silicon"

    # Edit > Copy and Select All act on the focused field.
    field = window.pages["Train"].name_edit
    window.show_page("Train")
    field.setText("my-adapter")
    field.setFocus()
    qtbot.waitUntil(lambda: QApplication.focusWidget() is field, timeout=2000)
    assert window.edit_focused("selectAll") and window.edit_focused("copy")
    assert QApplication.clipboard().text() == "my-adapter"


def test_a_dragged_file_shows_where_to_drop_it(qtbot, window, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(data))])
    enter = QDragEnterEvent(QPoint(50, 50), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    assert window.drop_hint.isVisible() and "Drop a dataset" in window.drop_hint.text()
    QApplication.sendEvent(window, QDragLeaveEvent())
    assert not window.drop_hint.isVisible()
