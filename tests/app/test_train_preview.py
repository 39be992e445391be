"""Issue 13: the Train page's memory preview is the engine's memory model fed the checked
dataset's longest example, so it reads what the run will plan; before a dataset is checked it
says it is an upper bound (examples of max_seq_length tokens)."""
from __future__ import annotations

import pytest

from .test_state import good_report

pytestmark = [pytest.mark.gui]


def test_the_train_preview_uses_the_checked_datasets_lengths(qtbot, tiny_model):
    from app.estimate import estimate, read_model_config
    from app.pages.train import TrainPage, _machine_memory
    from app.state import AppState

    model = tiny_model("qwen2")
    state = AppState()
    page = TrainPage(state)
    qtbot.addWidget(page)
    state.set_model(str(model))
    before = page.estimate_label.text()
    assert " · up to " in before and "the dataset's own lengths give the real figure" in before

    report = good_report()
    report["train_stats"]["length_max"] = 44
    state.set_report(report)
    state.set_data_status("ok")
    expected = estimate(read_model_config(model), page.settings_values(), longest=44)
    assert expected.length == 44 and not expected.bounded
    assert page.estimate_label.text() == expected.summary(_machine_memory())
    assert " · about " in page.estimate_label.text()

    state.set_data_status("failed", "bad file")  # a failed check: back to the bound
    assert " · up to " in page.estimate_label.text()
