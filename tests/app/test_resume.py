"""Issue 14: Resume from the Library after a relaunch continues the saved loss curve and shows
the run's own settings, name, base model and dataset on the Train form."""
from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt

from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def test_resume_from_the_library_restores_the_curve_and_the_runs_settings(
        qtbot, window, tailor_home, fake_argv):
    _adapter(tailor_home, "earlier-run", status="cancelled", steps=2)
    path = tailor_home / "adapters" / "earlier-run" / "manifest.json"
    m = json.loads(path.read_text())
    m["settings"] = {"rank": 12, "iters": 40, "learning_rate": 3e-4, "eval_every": 5}
    path.write_text(json.dumps(m))
    train = window.pages["Train"]
    train.resume_command = lambda name: fake_argv("--steps", "0", "--then", "wait-stop")
    library = window.pages["Library"]
    library.refresh()
    window.show_page("Library")
    assert library.select("earlier-run")
    assert library.buttons["resume"].isEnabled()
    qtbot.mouseClick(library.buttons["resume"], Qt.MouseButton.LeftButton)
    assert window.current_page() == "Train" and train.running
    assert list(train.history.train_loss) == [3.0, 2.5]  # the saved curve, not a blank chart
    assert list(train.history.valid_loss) == [2.7]
    values = train.settings_values()
    assert (values["rank"], values["iters"], values["eval_every"]) == (12, 40, 5)
    assert train.form.length_mode.currentData() == "iters"
    assert train.name_edit.text() == "earlier-run"
    label = train.inputs_label.text()
    assert "Qwen2.5-0.5B" in label and "chat.jsonl" in label and "none chosen" not in label
    train.stop()
    qtbot.waitUntil(lambda: train.job.done, timeout=20000)
