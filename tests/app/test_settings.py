"""Issue 14: settings that do not mislead. A preset applies all its values, a run's length is
epochs or steps (never a hidden mix), validation is scaled to the run, and an unusable model
folder never replaces the one in use."""
from __future__ import annotations

import pytest
from PySide6.QtCore import QSettings

from app import commands

pytestmark = [pytest.mark.gui]


def _page(qtbot, tmp_path, state=None):
    from app.pages.train import TrainPage
    from app.state import AppState

    settings = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    page = TrainPage(state or AppState(), settings=settings)
    qtbot.addWidget(page)
    return page, settings


def _argv_value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_a_preset_applies_all_its_values_and_steps_are_explicit(qtbot, tmp_path):
    from app.pages.train import TrainPage
    from app.state import AppState

    page, settings = _page(qtbot, tmp_path)
    page.form.set_values({"iters": 300})  # Steps typed once, on "balanced"
    assert page.form.length_mode.currentData() == "iters"
    assert page.form.widgets["iters"].isVisibleTo(page)
    assert not page.form.widgets["epochs"].isVisibleTo(page)
    assert "changed here: Steps 300" in page.preset_help.text()
    page._remember_defaults()

    again = TrainPage(AppState(), settings=settings)  # the next launch
    qtbot.addWidget(again)
    assert again.form.length_mode.currentData() == "iters"  # visible, not hidden in a box
    again.preset.setCurrentIndex(again.preset.findData("quick-style"))
    values = again.settings_values()
    assert values["iters"] == 0 and values["epochs"] == 1.0 and values["rank"] == 8
    assert again.form.length_mode.currentData() == "epochs"
    argv = commands.train_command("m", "d.jsonl", "n", values)
    assert "--iters" not in argv and _argv_value(argv, "--epochs") == "1"
    assert "changed here" not in again.preset_help.text()

    # Changing a value, then choosing the same preset again, resets it.
    again.form.set_values({"iters": 77, "rank": 4})
    assert "Steps 77" in again.preset_help.text() and "Rank 4" in again.preset_help.text()
    again.preset.activated.emit(again.preset.currentIndex())
    assert again.settings_values()["iters"] == 0 and again.settings_values()["rank"] == 8


def test_validation_is_scaled_to_the_run_length(qtbot, tmp_path):
    from app.pages.train import auto_eval_every
    from app.state import AppState

    state = AppState()
    page, _ = _page(qtbot, tmp_path, state)
    state.set_data(str(tmp_path / "d.jsonl"))
    state.set_report({"train_examples": 216})
    state.set_data_status("ok")
    # "Balanced": 2 epochs of 216 examples at batch 4 = 108 steps (was validated every 100).
    assert page.form.total_steps() == 108
    values = page.settings_values()
    assert values["eval_every"] == 7
    validations = 108 // values["eval_every"]
    assert 10 <= validations <= 20
    argv = commands.train_command("m", "d.jsonl", "n", values)
    assert _argv_value(argv, "--eval-every") == "7"
    page.form.set_values({"iters": 40})
    assert 10 <= 40 // page.settings_values()["eval_every"] <= 20
    assert auto_eval_every(3) == 1 and auto_eval_every(10**6) == 1000  # bounded
    # Turned off, the typed value is used as it is.
    page.form.eval_auto.setChecked(False)
    page.form.set_values({"eval_every": 25})
    assert page.settings_values()["eval_every"] == 25
    # Switching to steps counts the same run in steps.
    page.form.set_values({"iters": 0})
    page.form.length_mode.setCurrentIndex(page.form.length_mode.findData("iters"))
    assert page.form.widgets["iters"].value() == 108


def test_an_unusable_model_folder_is_refused_and_start_stays_disabled(
        qtbot, window, tiny_model, tmp_path):
    from .test_app import drop_files

    model_page, train = window.pages["Model"], window.pages["Train"]
    good = str(tiny_model("qwen2"))
    assert model_page.choose(good)
    assert window.settings.value("model/last") == good
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    assert not model_page.choose(str(empty))
    assert window.state.model == good and window.settings.value("model/last") == good
    assert model_page.banner.kind == "error"
    assert "Not a usable model" in model_page.banner.text()
    assert "Still using" in model_page.banner.text()
    # A dropped folder that looks like a model (config.json) but has no weights.
    fake = tmp_path / "fake-model"
    fake.mkdir()
    (fake / "config.json").write_text('{"model_type": "qwen2"}')
    drop_files(window, [fake])
    assert window.current_page() == "Model"
    assert window.state.model == good and window.settings.value("model/last") == good
    assert "no .safetensors weights" in model_page.banner.text()

    # A remembered model that has gone since: Start stays disabled, and says why.
    window.state.set_model(str(tmp_path / "gone"))
    window.state.set_data(str(tmp_path / "d.jsonl"))
    assert not train.start_button.isEnabled()
    assert "no such folder" in train.start_button.toolTip()
    assert train.start() is False and train.job is None
