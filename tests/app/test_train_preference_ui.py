"""Issues 18 and 19 on the Train page: readable labels for the new settings, DPO/ORPO-only
fields enabled only for their objective, the planned steps of a packed run, and the reward
accuracy / margin charts fed by a replayed preference run's Metrics events."""
from __future__ import annotations

import json
import math
import random

import pytest

from .test_state import good_report, replay

pytestmark = [pytest.mark.gui]


def _page(qtbot):
    from app.pages.train import TrainPage
    from app.state import AppState

    state = AppState()
    page = TrainPage(state)
    qtbot.addWidget(page)
    return state, page


def test_new_settings_have_readable_labels_and_their_help_as_tooltip(qtbot):
    from engine.train.config import TrainConfig
    import dataclasses

    _, page = _page(qtbot)
    form = page.form
    expected = {"lora_plus_ratio": "LoRA+ ratio", "pack": "Pack examples",
                "objective": "Objective", "beta": "DPO beta",
                "label_smoothing": "DPO label smoothing", "orpo_lambda": "ORPO lambda",
                "init_adapter": "Start from adapter", "baseline_prompts": "Baseline prompts"}
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
    for name, text in expected.items():
        assert form.labels[name].text() == text
        assert help_text[name] in form.labels[name].toolTip()


def test_dpo_and_orpo_fields_are_enabled_only_for_their_objective(qtbot):
    _, page = _page(qtbot)
    form, w = page.form, page.form.widgets
    assert form.widgets["objective"].currentData() == "sft"
    assert not w["beta"].isEnabled() and not w["orpo_lambda"].isEnabled()
    assert not w["label_smoothing"].isEnabled() and w["pack"].isEnabled()
    assert w["beta"].toolTip().startswith("only for DPO runs (this run: SFT)")
    assert not page.charts.isTabVisible(1)  # no reward charts for an SFT run

    form.set_values({"objective": "dpo"})
    assert w["beta"].isEnabled() and w["label_smoothing"].isEnabled()
    assert not w["orpo_lambda"].isEnabled() and not w["pack"].isEnabled()
    assert form.labels["pack"].toolTip().startswith("only for SFT runs (this run: DPO)")
    assert page.charts.isTabVisible(1) and page.charts.isTabVisible(2)

    form.set_values({"objective": "orpo"})
    assert w["orpo_lambda"].isEnabled() and not w["beta"].isEnabled()


def test_the_packed_rows_estimate_errs_high_but_close_to_the_engines_packer():
    from app.pages.train import packed_rows_estimate
    from engine.results import TokenStats
    from engine.train.packing import pack_rows

    rng = random.Random(3)
    for capacity, mix in ((256, (8, 60)), (512, (20, 400)), (1024, (30, 200))):
        lengths = [rng.randint(*mix) for _ in range(500)]
        stats = TokenStats.from_lengths(lengths, trained=0)
        true_rows = len(pack_rows([min(n, capacity) for n in lengths], capacity))
        est = packed_rows_estimate(stats, capacity)
        assert true_rows <= est <= math.ceil(true_rows * 1.25), (capacity, true_rows, est)
        assert est < len(lengths)  # far below the unpacked count the preview used to show


def test_the_step_preview_counts_packed_rows_when_pack_is_on(qtbot):
    state, page = _page(qtbot)
    form = page.form
    form.set_values({"batch_size": 1, "epochs": 1.0, "iters": 0, "grad_accumulation": 1,
                     "max_seq_length": 100, "pack": False, "objective": "sft"})
    state.set_report(good_report(n_train=27))  # 27 examples of 20-44 tokens, 900 tokens
    state.set_data_status("ok")
    assert form.total_steps() == 27
    assert form.steps_note.text() == "27 steps"

    form.set_values({"pack": True})
    steps = form.total_steps()
    # at most 100 tokens a row: at least ceil(900 / 100) rows, and far fewer than 27
    assert math.ceil(900 / 100) <= steps < 27
    assert form.steps_note.text() == (f"about {steps} steps or fewer (packed: about {steps} "
                                      "rows or fewer from 27 examples)")
    form.set_values({"objective": "dpo"})  # the engine refuses --pack for DPO: unpacked count
    assert form.total_steps() == 27


def test_a_preference_runs_metrics_draw_reward_accuracy_and_margin(qtbot, tmp_path, fake_argv):
    state, page = _page(qtbot)
    events = [{"event": "started", "job": "train", "config": {}, "info": {}}]
    for i in range(1, 6):
        events.append({"event": "step", "job": "train", "iteration": i, "total_iterations": 5,
                       "epoch": i / 5, "train_loss": 0.69 - 0.05 * i, "learning_rate": 1e-4,
                       "tokens_per_second": 100.0, "trained_tokens": 10 * i,
                       "peak_memory_gb": 0.1, "eta_seconds": 0.0})
        events.append({"event": "metrics", "job": "train", "iteration": i, "split": "train",
                       "values": {"loss": 0.69 - 0.05 * i,
                                  "reward_accuracy": None if i == 1 else 0.5 + 0.1 * i,
                                  "reward_margin": 0.2 * i}})
    events.append({"event": "metrics", "job": "train", "iteration": 5, "split": "valid",
                   "values": {"loss": 0.4, "reward_accuracy": 0.75, "reward_margin": 0.9}})
    stream = replay(tmp_path, "dpo", events)
    assert not page.charts.isTabVisible(1)
    page._launch("Train dpo-run", fake_argv("--replay", str(stream)), "dpo-run")
    qtbot.waitUntil(lambda: page.job.done, timeout=20000)
    acc, margin = page.reward_charts["reward_accuracy"], page.reward_charts["reward_margin"]
    # step 1's accuracy is None (every pair tied): not drawn as 0
    assert acc.points["train"] == ([2, 3, 4, 5], pytest.approx([0.7, 0.8, 0.9, 1.0]))
    assert acc.points["valid"] == ([5], [0.75])
    assert margin.points["train"][0] == [1, 2, 3, 4, 5]
    assert margin.points["valid"] == ([5], [0.9])
    assert not acc._empty_label.isVisibleTo(acc)
    assert page.charts.isTabVisible(1) and page.charts.isTabVisible(2)
    assert list(page.history.train_loss)[:1] == [pytest.approx(0.64)]  # the loss chart too


def test_reward_charts_say_no_data_yet_and_load_a_manifests_history(qtbot):
    from app.widgets import MetricChart

    chart = MetricChart("reward_margin", "reward margin")
    qtbot.addWidget(chart)
    assert chart._empty_label.text() == "No data yet" and chart._empty_label.isVisibleTo(chart)
    history = json.loads(json.dumps({"train": [[1, {"reward_margin": 0.1}],
                                               [2, {"reward_margin": 0.3}]],
                                     "valid": [[2, {"reward_margin": 0.25}]]}))
    chart.load(history)
    assert chart.points["train"] == ([1, 2], [0.1, 0.3]) and chart.points["valid"] == ([2], [0.25])
    assert not chart._empty_label.isVisibleTo(chart)


def test_a_dpo_setup_at_1024x700_fits_the_settings_column(qtbot, window, test_output):
    from .conftest import screenshot

    window.resize(1024, 700)
    window.show_page("Train")
    train = window.pages["Train"]
    train.form.set_values({"objective": "dpo"})
    train.form.more.setChecked(True)
    qtbot.wait(50)
    scroll = train.form.parentWidget().parentWidget()  # the settings' QScrollArea
    # the Length row once pushed the form wider than its column (a horizontal scrollbar)
    assert not scroll.horizontalScrollBar().isVisible()
    assert train.form.width() <= scroll.viewport().width()
    assert train.charts.tabBar().isVisible()
    tabs = train.charts.tabBar()
    for i in range(tabs.count()):
        if tabs.isTabVisible(i):
            assert tabs.tabRect(i).right() <= tabs.width(), tabs.tabText(i)
    screenshot(window, test_output, "train-dpo-1024x700")


def test_resuming_a_dpo_run_from_the_library_brings_back_its_reward_curves(
        qtbot, window, tailor_home, fake_argv):
    from .test_models import _adapter

    _adapter(tailor_home, "dpo-run", status="cancelled", steps=2)
    path = tailor_home / "adapters" / "dpo-run" / "manifest.json"
    m = json.loads(path.read_text())
    m["settings"] = {"objective": "dpo", "beta": 0.2, "iters": 4}
    m["metrics_history"] = {"train": [[1, {"reward_accuracy": None, "reward_margin": 0.0}],
                                      [2, {"reward_accuracy": 0.75, "reward_margin": 0.4}]],
                            "valid": [[2, {"reward_accuracy": 0.5, "reward_margin": 0.2}]]}
    path.write_text(json.dumps(m))
    train = window.pages["Train"]
    train.resume_command = lambda name: fake_argv("--steps", "0", "--then", "wait-stop")
    train.resume("dpo-run")
    assert train.running
    acc = train.reward_charts["reward_accuracy"]
    assert acc.points["train"] == ([2], [0.75]) and acc.points["valid"] == ([2], [0.5])
    assert train.reward_charts["reward_margin"].points["train"] == ([1, 2], [0.0, 0.4])
    assert train.form.widgets["beta"].isEnabledTo(train.form)  # the form is off while running
    assert train.charts.isTabVisible(1)
    train.stop()
    qtbot.waitUntil(lambda: train.job.done, timeout=20000)
