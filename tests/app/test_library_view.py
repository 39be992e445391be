"""Issue 14, Library: a run in progress is listed from its start; Compare never offers the
selected run itself; settings and the record read as words, not field names and JSON."""
from __future__ import annotations

import json

import pytest

from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def test_a_run_in_progress_is_listed_from_its_start(qtbot, window, tailor_home, fake_argv):
    library, train = window.pages["Library"], window.pages["Train"]
    assert library.model.row_of("in-progress") < 0
    # What `tailor train` writes before its first step: a manifest with status "running".
    _adapter(tailor_home, "in-progress", status="running", weights=False)
    train._launch("Train in-progress", fake_argv("--steps", "2", "--then", "wait-stop"),
                  "in-progress")
    qtbot.waitUntil(lambda: train.view.state == "running", timeout=20000)
    assert library.model.row_of("in-progress") >= 0  # not only when it ends
    train.stop()
    qtbot.waitUntil(lambda: train.job.done, timeout=20000)


def test_library_details_read_as_words(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "one")
    _adapter(tailor_home, "two")
    path = tailor_home / "adapters" / "one" / "manifest.json"
    m = json.loads(path.read_text())
    m["settings"] = {"num_layers": 8, "grad_checkpoint": True, "learning_rate": 0.0002}
    path.write_text(json.dumps(m))
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.refresh()
    assert page.select("one")
    offered = [page.compare_box.itemData(i) for i in range(page.compare_box.count())]
    assert offered == ["", "two"]  # not "one" itself
    settings = page.settings_view.toPlainText()
    assert "Layers (last N)" in settings and "num_layers" not in settings
    assert "Gradient checkpointing" in settings and "yes" in settings and "0.0002" in settings
    record = page.record_view.toPlainText()
    assert not record.lstrip().startswith("{") and '"' not in record
    assert "base model › path" in record and "/models/Qwen2.5-0.5B" in record
    page.select("two")
    offered = [page.compare_box.itemData(i) for i in range(page.compare_box.count())]
    assert offered == ["", "one"]


def test_show_in_finder_and_copy_command(qtbot, tailor_home, tmp_path):
    from PySide6.QtWidgets import QApplication

    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "one")
    path = tailor_home / "adapters" / "one" / "manifest.json"
    m = json.loads(path.read_text())
    m["settings"] = {"rank": 12, "iters": 40}
    m["base_model"]["given"] = "/models/Qwen2.5-0.5B"
    path.write_text(json.dumps(m))
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.select("one")
    shown = []
    page.reveal = shown.append
    page._act("reveal")
    assert shown == [tailor_home / "adapters" / "one"]
    page._act("copy")
    assert QApplication.clipboard().text() == (
        "tailor train --model /models/Qwen2.5-0.5B --data /data/chat.jsonl --name one-again "
        "--rank 12 --iters 40")


def test_preferences_apply_the_library_folder_at_once(qtbot, window, tailor_home, tmp_path,
                                                       monkeypatch):
    import os

    from app.main_window import PreferencesDialog

    # As app/main.py leaves it at start: the Preferences folder became TAILOR_HOME.
    window.settings.setValue("library/folder", str(tailor_home))
    other = tmp_path / "other-library"
    _adapter(other, "elsewhere")
    dialog = PreferencesDialog(window.settings, window)
    dialog.library.setText(str(other))
    dialog.accept()
    assert os.environ["TAILOR_HOME"] == str(other)
    window.preferences_applied(dialog.applied)
    assert window.pages["Library"].model.row_of("elsewhere") >= 0
    # An explicit $TAILOR_HOME (not the one Preferences set) wins, and says so.
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "explicit"))
    dialog = PreferencesDialog(window.settings, window)
    dialog.library.setText(str(tmp_path / "third"))
    dialog.accept()
    assert os.environ["TAILOR_HOME"] == str(tmp_path / "explicit")
    assert "it wins" in dialog.applied


def test_compare_overlays_two_other_runs(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    for name in ("one", "two", "three"):
        _adapter(tailor_home, name)
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.select("one")
    first, second = page.compare_boxes
    first.setCurrentIndex(first.findData("two"))
    second.setCurrentIndex(second.findData("three"))
    assert len(page.chart.compare) == 2
    page.chart.refresh()
    for history, train_item, _ in page.chart.compare:
        assert list(train_item.getData()[1]) == [3.0, 2.5]
    second.setCurrentIndex(second.findData("two"))  # the same run twice is drawn once
    assert len(page.chart.compare) == 1
