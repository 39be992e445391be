"""Issue 14, Playground: side by side by default, Stop and Clear, temperature and system prompt
passed to the engine, and the two columns' turns kept in step."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from app import commands

from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def test_generate_command_passes_system_prompt_and_temperature():
    argv = commands.generate_command("m", "hi", system="Be brief.", temperature=0.7)
    assert argv[argv.index("--system") + 1] == "Be brief."
    assert argv[argv.index("--temperature") + 1] == "0.7"
    assert "--temperature" not in commands.generate_command("m", "hi")  # 0: engine default


def test_playground_stop_clear_and_aligned_columns(qtbot, tailor_home, fake_argv):
    from app.pages.playground import PlaygroundPage
    from app.state import AppState

    _adapter(tailor_home, "tuned")
    state = AppState()
    state.set_model("/models/base")
    page = PlaygroundPage(state)
    qtbot.addWidget(page)
    assert page.side_by_side.isChecked() and page.adapter_box.currentData() == "tuned"
    seen = []

    def command(model, prompt, adapter="", max_tokens=256, system="", temperature=0.0):
        seen.append((adapter, system, temperature))
        return fake_argv("--steps", "0", "--then", "wait-stop")  # answers until stopped
    page.generate_command = command
    page.system_edit.setText("Be brief.")
    page.temperature.setValue(0.5)
    assert not page.stop_button.isEnabled() and not page.clear_button.isEnabled()

    page.side_by_side.setChecked(False)
    page.prompt.setPlainText("first")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: all(j.state == "running" for j in page.jobs), timeout=20000)
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.running_jobs(), timeout=20000)
    assert page.left.turns[-1][1].endswith("[stopped]")

    page.side_by_side.setChecked(True)
    page.prompt.setPlainText("second")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    assert seen[-2:] == [("", "Be brief.", 0.5), ("tuned", "Be brief.", 0.5)]
    assert len(page.left.turns) == len(page.right.turns) == 2
    assert page.right.turns[0] == ("first", "(asked in the other column only)")
    page.stop()
    qtbot.waitUntil(lambda: not page.running_jobs(), timeout=20000)
    assert page.clear_button.isEnabled()
    qtbot.mouseClick(page.clear_button, Qt.MouseButton.LeftButton)
    assert page.left.turns == [] and page.right.turns == []
    assert page.left.view.toPlainText() == ""
