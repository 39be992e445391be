"""A DPO run's baseline asks for the untrained weights' validation loss before step 1 and the
trainer validates at step 0: as for SFT (tests/train/test_validation_once.py), one pass serves
both (PreferenceTrainer uses Trainer.evaluate's once-per-step cache); later validations and a
resumed run still compute their own."""
from __future__ import annotations

import pytest

from engine import library
from engine.events import ListReporter, Metrics
from engine.train.config import make_config
from engine.train.preference import PreferenceTrainer
from engine.train.run import train_adapter
from tests.preference.test_train_preference import write_pairs
from tests.train.test_validation_once import stopped_after_step_2


@pytest.fixture
def counted_passes(monkeypatch):
    """How many preference validation passes run (each walks the validation pairs once)."""
    passes = []
    original = PreferenceTrainer._valid_sums

    def counting(self, *args, **kw):
        passes.append(self.step)
        return original(self, *args, **kw)

    monkeypatch.setattr(PreferenceTrainer, "_valid_sums", counting)
    return passes


def _cfg(**kw):
    return make_config(**{"objective": "dpo", "iters": 4, "eval_every": 2, "rank": 4,
                          "batch_size": 2, "learning_rate": 1e-3, "save_every": 1,
                          "baseline_prompts": 2, **kw})


def _valid_metrics(events):
    return [e for e in events.events if isinstance(e, Metrics) and e.split == "valid"]


def test_the_baseline_and_the_step_0_validation_share_one_dpo_pass(tiny_model, tmp_path,
                                                                  counted_passes):
    events = ListReporter()
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    info = train_adapter(str(tiny_model("qwen2")), data, "dpo-once", _cfg(), report=events)
    valid = _valid_metrics(events)
    assert [v.iteration for v in valid] == [0, 2, 4]
    assert counted_passes == [0, 2, 4]  # step 0 (shared with the baseline), 2 and 4: not 4
    m = info.manifest
    step0 = valid[0].values["loss"]
    assert m["baseline"]["val_loss"] == step0 == m["loss_history"]["valid"][0][1]
    assert m["metrics_history"]["valid"][0] == [0, valid[0].values]
    assert valid[1].values["loss"] != step0  # step 2 is its own pass


def test_a_resumed_dpo_run_validates_its_own_weights(tiny_model, tmp_path, counted_passes):
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    stopped_after_step_2(tiny_model("qwen2"), data, "dpo-resumed", _cfg())
    before = list(counted_passes)
    events = ListReporter()
    train_adapter(None, None, "dpo-resumed", resume=True, report=events)
    assert [v.iteration for v in _valid_metrics(events)] == [4]
    assert counted_passes == before + [4]
    history = library.get_adapter("dpo-resumed").manifest["metrics_history"]["valid"]
    assert [s for s, _ in history] == [0, 2, 4]
