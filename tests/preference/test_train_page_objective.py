"""The Train page offers the objective (SFT, DPO, ORPO) beside the method, with the engine's
help as its tooltip, and its choice and DPO's beta reach the command line."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from app import commands

pytestmark = [pytest.mark.gui]


def test_the_objective_is_a_basic_setting_that_reaches_the_argv(qtbot, tmp_path):
    from app.pages.train import TrainPage
    from app.state import AppState

    page = TrainPage(AppState(), settings=QSettings(str(tmp_path / "s.ini"),
                                                   QSettings.Format.IniFormat))
    qtbot.addWidget(page)
    box = page.form.widgets["objective"]
    assert [box.itemText(i) for i in range(box.count())] == ["sft", "dpo", "orpo"]
    assert "chosen" in box.toolTip() and not page.form.advanced.isAncestorOf(box)
    page.form.set_values({"objective": "dpo", "beta": 0.2})
    argv = commands.train_command("m", "d.jsonl", "n", page.settings_values())
    assert argv[argv.index("--objective") + 1] == "dpo"
    assert argv[argv.index("--beta") + 1] == "0.2"
