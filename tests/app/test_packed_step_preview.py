"""The Train page's packed step preview runs the engine's own packing planner
(engine/train/pack_plan.py), not a copy: where the data check's histogram holds every
example's exact length (bins one token wide) the preview's steps are the run's steps, and the
planner loads without MLX, as the app needs."""
from __future__ import annotations

import random
import subprocess
import sys
from types import SimpleNamespace

import pytest

from engine.results import TokenStats

from .test_state import good_report

pytestmark = [pytest.mark.gui]


def test_the_packed_preview_counts_the_runs_own_rows(qtbot):
    from app.pages.train import TrainPage
    from app.state import AppState
    from engine.train.batching import BatchStream
    from engine.train.config import TrainConfig
    from engine.train.loop import total_steps

    rng = random.Random(7)
    lengths = [rng.randint(20, 39) for _ in range(57)]  # 20 lengths: one-token bins
    stats = TokenStats.from_lengths(lengths, trained=0)
    assert stats.histogram_edges[1] - stats.histogram_edges[0] == 1
    report = {**good_report(n_train=len(lengths)), "train_stats": stats.to_dict()}
    state = AppState()
    page = TrainPage(state)
    qtbot.addWidget(page)
    settings = {"batch_size": 2, "epochs": 3.0, "iters": 0, "grad_accumulation": 1,
                "max_seq_length": 100, "pack": True, "objective": "sft"}
    page.form.set_values(settings)
    state.set_report(report)
    state.set_data_status("ok")

    examples = [SimpleNamespace(tokens=[1] * n, loss_mask=[1] * n) for n in lengths]
    stream = BatchStream(examples, 2, 100, seed=0, pack=True)
    engine_steps = total_steps(TrainConfig(**settings), stream.n_units)
    assert stream.n_units < len(lengths) // 2  # packing does cut the steps here
    assert page.form.total_steps() == engine_steps
    assert page.form.steps_note.text().startswith(f"about {engine_steps} steps or fewer")


def test_the_planner_imports_without_mlx():
    code = ("import sys, engine.train.pack_plan as p; "
            "assert p.pack_rows([5, 3, 4], 8) == [[0, 1], [2]]; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
