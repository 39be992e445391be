"""Issue 19, Library: a DPO/ORPO run's reward accuracy and margin are charted from the
manifest's metrics_history (a Rewards tab, only for runs that have one), and the record does
not print them as a wall of numbers."""
from __future__ import annotations

import json

import pytest

from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def test_the_library_charts_a_preference_runs_rewards(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "sft-run")
    _adapter(tailor_home, "dpo-run")
    path = tailor_home / "adapters" / "dpo-run" / "manifest.json"
    m = json.loads(path.read_text())
    m["metrics_history"] = {
        "train": [[1, {"reward_accuracy": None, "reward_margin": 0.0}],
                  [2, {"reward_accuracy": 0.625, "reward_margin": 0.375}]],
        "valid": [[2, {"reward_accuracy": 0.875, "reward_margin": 0.5}]]}
    path.write_text(json.dumps(m))
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.refresh()
    rewards = page.tabs.indexOf(page.rewards)
    assert page.select("dpo-run")
    assert page.tabs.isTabVisible(rewards) and page.tabs.tabText(rewards) == "Rewards"
    accuracy, margin = page.reward_charts
    assert accuracy.points == {"train": ([2], [0.625]), "valid": ([2], [0.875])}
    assert margin.points == {"train": ([1, 2], [0.0, 0.375]), "valid": ([2], [0.5])}
    assert "0.375" not in page.record_view.toPlainText()  # the chart's, not the record's
    assert page.select("sft-run")
    assert not page.tabs.isTabVisible(rewards)
    assert not len(accuracy) and accuracy._empty_label.isVisibleTo(accuracy)
