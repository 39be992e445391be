"""The run record's baseline asks for the base model's validation loss before step 1, and the
trainer validates at step 0: one validation pass serves both (before, the same loss was computed
twice, ~10% of a short run); later validations and a resumed run still compute their own."""
from __future__ import annotations

import pytest

from engine import library
from engine.events import Cancelled, CancelToken, ListReporter, Validation
from engine.train.batching import BatchStream
from engine.train.config import make_config
from engine.train.run import train_adapter

from .conftest import write_toy_chat


@pytest.fixture
def counted_passes(monkeypatch):
    """How many validation passes start (each walks the validation stream once)."""
    passes = []
    original = BatchStream.all_in_order

    def counting(self):
        passes.append(len(self.examples))
        return original(self)

    monkeypatch.setattr(BatchStream, "all_in_order", counting)
    return passes


def _cfg(**kw):
    return make_config(**{"iters": 4, "eval_every": 2, "rank": 4, "batch_size": 2,
                          "learning_rate": 1e-3, "save_every": 1, "baseline_prompts": 2, **kw})


def test_the_baseline_and_the_step_0_validation_share_one_pass(tiny_model, tmp_path,
                                                              counted_passes):
    events = ListReporter()
    data = write_toy_chat(tmp_path / "toy.jsonl")
    info = train_adapter(str(tiny_model("qwen2")), data, "once", _cfg(), report=events)
    validations = [e for e in events.events if isinstance(e, Validation)]
    assert [v.iteration for v in validations] == [0, 2, 4]
    assert len(counted_passes) == 3  # step 0 (shared with the baseline), 2 and 4: not 4
    m = info.manifest
    assert m["baseline"]["val_loss"] == validations[0].val_loss == m["loss_history"]["valid"][0][1]
    assert validations[1].val_loss != validations[0].val_loss  # step 2 is its own pass


def stopped_after_step_2(model, data, name: str, cfg) -> None:
    """Start a run and Stop it after step 2 (its checkpoint is then step 2's)."""
    cancel = CancelToken()

    def stop_after_step_2(micro, batch):
        if micro == 2:
            cancel.cancel()
        return batch

    with pytest.raises(Cancelled):
        train_adapter(str(model), data, name, cfg, cancel=cancel, batch_hook=stop_after_step_2)


def test_a_resumed_run_validates_its_own_weights(tiny_model, tmp_path, counted_passes):
    data = write_toy_chat(tmp_path / "toy.jsonl")
    stopped_after_step_2(tiny_model("qwen2"), data, "resumed", _cfg())
    before = len(counted_passes)
    events = ListReporter()
    train_adapter(None, None, "resumed", resume=True, report=events)
    steps = [v.iteration for v in events.events if isinstance(v, Validation)]
    assert steps == [4] and len(counted_passes) == before + 1
    history = library.get_adapter("resumed").manifest["loss_history"]["valid"]
    assert [s for s, _ in history] == [0, 2, 4]
