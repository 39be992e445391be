"""Issue 14: confirmations say what they do ("Delete", "Stop and Quit", "Replace") and Cancel
is the default, so Return (or Esc) never deletes, quits or replaces anything."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QApplication, QMessageBox
from shiboken6 import isValid

from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def press_in_next_dialog(qtbot, key, seen: list):
    """Press ``key`` in the dialog that opens next (while its exec() runs)."""
    def press():
        box = QApplication.activeModalWidget() or next(
            (w for w in QApplication.topLevelWidgets()
             if isinstance(w, QMessageBox) and w.isVisible()), None)
        if box is None:
            QTimer.singleShot(20, press)
            return
        # A key the dialog ignored must fail the test, not hang it.
        QTimer.singleShot(1000, lambda: isValid(box) and box.isVisible() and (
            seen.append("ignored"), box.reject()))
        default = box.defaultButton()
        seen.extend([box, [b.text() for b in box.buttons()], default and default.text()])
        qtbot.keyClick(box, key)
    QTimer.singleShot(20, press)


@pytest.mark.parametrize("key", [Qt.Key.Key_Return, Qt.Key.Key_Escape])
def test_return_in_the_delete_question_does_not_delete(qtbot, tailor_home, key):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "precious")
    page = LibraryPage(AppState())  # the real dialog, not an injected answer
    qtbot.addWidget(page)
    assert page.select("precious")
    seen: list = []
    press_in_next_dialog(qtbot, key, seen)
    page._act("delete")
    assert seen, "no question was asked"
    assert "ignored" not in seen, ("the dialog ignored the key", seen)
    box, buttons, default = seen
    assert isinstance(box, QMessageBox)
    assert "Move to Trash" in buttons and "Cancel" in buttons
    assert not {"Yes", "&Yes", "No", "&No"} & set(buttons)
    assert default == "Cancel"
    assert (tailor_home / "adapters" / "precious" / "manifest.json").exists()
    assert page.model.row_of("precious") >= 0


@pytest.mark.parametrize("verb", ["Delete", "Stop and Quit", "Replace"])
def test_each_question_names_its_verb_and_defaults_to_cancel(qtbot, verb):
    from app.widgets import ask, confirm_box

    box, act = confirm_box(None, "Question", "Details", verb)
    qtbot.addWidget(box)
    assert act.text() == verb
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.Cancel)
    assert box.escapeButton() is box.button(QMessageBox.StandardButton.Cancel)
    seen: list = []
    press_in_next_dialog(qtbot, Qt.Key.Key_Return, seen)
    assert ask(None, "Question", "Details", verb) is False  # Return is Cancel


def test_the_window_and_pages_ask_with_their_verbs(qtbot, window, tailor_home):
    asked = []
    window.confirm = lambda title, text, verb: asked.append(verb) or False
    library = window.pages["Library"]
    library.confirm = window.confirm
    _adapter(tailor_home, "keep")
    library.refresh()
    library.select("keep")
    library._act("delete")
    window.pages["Export"].confirm = window.confirm
    window.pages["Export"]._offer_replace("pip", "Ollama already has a model named pip")
    assert asked == ["Move to Trash", "Replace"]
    assert (tailor_home / "adapters" / "keep").is_dir()
