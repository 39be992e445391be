"""The Train page's "Machines" field: empty trains here; host names, a host file or a number of
local processes reach the command as --hosts/--ranks."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from app.machines import machines_argv

pytestmark = [pytest.mark.gui]


def test_the_field_becomes_the_launch_flags():
    assert machines_argv("") == [] and machines_argv(" 1 ") == []
    assert machines_argv("2") == ["--ranks", "2"]
    assert machines_argv("mac1,mac2") == ["--hosts", "mac1,mac2"]
    assert machines_argv("~/hosts.json") == ["--hosts", "~/hosts.json"]


def test_start_passes_the_machines_to_tailor_train(qtbot, tmp_path, tiny_model):
    from app.pages.train import TrainPage
    from app.state import AppState

    page = TrainPage(AppState(), settings=QSettings(str(tmp_path / "s.ini"),
                                                   QSettings.Format.IniFormat))
    qtbot.addWidget(page)
    assert "ssh" in page.machines.toolTip()
    launched = []
    page.start_problem = lambda: None
    page._launch = lambda title, argv, name, **kw: launched.append(argv)
    page.state.model, page.state.data = str(tiny_model("qwen2")), str(tmp_path / "d.jsonl")
    page.name_edit.setText("several")
    page.machines.setText("mac1,mac2")
    assert page.start()
    argv = launched[0]
    assert "train" in argv and argv[argv.index("--hosts") + 1] == "mac1,mac2"
    page.machines.setText("")
    assert page.start() and "--hosts" not in launched[1] and "--ranks" not in launched[1]
