"""Issue 20, the Library's Merge: select two adapters, Merge, choose method and weights (each
setting's tooltip is the engine's help text), the real `tailor merge` worker runs with its
progress, and the new adapter appears selected with its lineage; a refusal shows its reason."""
from __future__ import annotations

import dataclasses

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt

from tests.merge.helpers import make_lora

pytestmark = [pytest.mark.gui]


@pytest.fixture
def page(qtbot, tailor_home, tiny_model):
    from app.pages.library import LibraryPage
    from app.state import AppState

    base = tiny_model("llama3")
    make_lora("one", base, seed=1)
    make_lora("two", base, seed=2, rank=8)
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.resize(1024, 700)
    page.show()
    return page


def _select(page, *names):
    page.view.clearSelection()
    flags = QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows
    for name in names:
        idx = page.proxy.mapFromSource(page.model.index(page.model.row_of(name), 0))
        page.view.selectionModel().select(idx, flags)


def test_merge_two_selected_adapters_from_the_library(qtbot, page, tailor_home):
    from engine.merge.config import MergeConfig

    _select(page, "one")
    assert not page.merge_button.isEnabled()  # one adapter: nothing to merge
    _select(page, "one", "two")
    assert sorted(page.selected_names()) == ["one", "two"]
    assert page.merge_button.isEnabled()
    qtbot.mouseClick(page.merge_button, Qt.MouseButton.LeftButton)
    dialog = page.merge_dialog
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(MergeConfig)}
    assert dialog.method_box.toolTip() == help_text["method"]
    assert dialog.density_box.toolTip() == help_text["density"]
    assert dialog.weight_boxes[0].toolTip() == help_text["weights"]
    dialog.method_box.setCurrentIndex(dialog.method_box.findData("ties"))
    assert dialog.density_box.isEnabled() and not dialog.seed_box.isEnabled()
    dialog.weight_boxes[0].setValue(0.7)
    dialog.weight_boxes[1].setValue(0.3)
    dialog.rank_box.setValue(4)
    dialog.name_edit.setText("blend")
    seen = []
    qtbot.mouseClick(dialog.merge_button, Qt.MouseButton.LeftButton)
    dialog.job.worker.progressed.connect(seen.append)
    qtbot.waitUntil(lambda: dialog.job.done, timeout=60000)
    assert dialog.job.state == "finished", dialog.banner.plain_text()
    assert seen and dialog.result.adapter == "blend" and dialog.result.method == "ties"
    assert (tailor_home / "adapters" / "blend" / "adapters.safetensors").exists()
    # the new adapter is listed, selected, and says where it came from
    assert page.model.row_of("blend") >= 0 and page.selected_name() == "blend"
    first, second = dialog.names  # the weights went to them in this order
    lineage = page.settings_view.toPlainText()
    assert "Merged from" in lineage and "by ties" in lineage and "rank 4" in lineage
    assert f"{first} (0.7) + {second} (0.3)" in lineage


def test_a_refused_merge_shows_the_reason(qtbot, page, tailor_home):
    _select(page, "one", "two")
    qtbot.mouseClick(page.merge_button, Qt.MouseButton.LeftButton)
    dialog = page.merge_dialog
    dialog.name_edit.setText("two")  # taken
    qtbot.mouseClick(dialog.merge_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.job.done, timeout=60000)
    assert dialog.job.state == "failed"
    assert "already exists" in dialog.banner.plain_text()
    assert dialog.merge_button.isEnabled()  # ready to try another name
