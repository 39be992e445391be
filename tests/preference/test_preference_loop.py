"""What SFT's loop guarantees holds for DPO and ORPO through the same code path
(engine/train/run.py's train_adapter, engine/train/loop.py's Trainer): a non-finite loss stops
the run and keeps the last finite checkpoint, early stopping ends on the preference validation
loss, and the memory estimate counts a preference batch's 2B rows."""
from __future__ import annotations

import math

import pytest

from engine.events import ListReporter, Started
from engine.models import load_model
from engine.train.adapters import apply_adapters
from engine.train.config import make_config
from engine.train.estimate import estimate
from engine.train.run import train_adapter
from tests.preference.test_train_preference import write_pairs
from tests.train.test_resume import assert_non_finite_stop_keeps_checkpoint_4

OBJECTIVES = ["dpo", "orpo"]


def _cfg(objective, **kw):
    return make_config(**{**dict(objective=objective, iters=12, save_every=4, eval_every=0,
                                 learning_rate=2e-3, rank=4, batch_size=2,
                                 baseline_prompts=0), **kw})


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_non_finite_loss_stops_and_keeps_the_last_finite_checkpoint(tiny_model, tmp_path,
                                                                    objective):
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)

    def poison(micro, batch):  # NaN owner weights of the chosen rows from micro-batch 6 on
        if micro >= 6:
            batch.chosen.owner = batch.chosen.owner * float("nan")
        return batch

    assert_non_finite_stop_keeps_checkpoint_4(tiny_model("qwen2"), data, _cfg(objective),
                                              poison)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_early_stopping_on_the_preference_validation_loss(tiny_model, tmp_path, objective):
    # learning rate 0: the validation loss never improves, so patience 2 stops at step 4
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    info = train_adapter(str(tiny_model("qwen2")), data, "es",
                         _cfg(objective, learning_rate=0.0, eval_every=2, patience=2,
                              iters=20))
    m = info.manifest
    assert m["stopped_early"] is True and m["steps"] == 4 and m["status"] == "finished"
    assert [s for s, _ in m["loss_history"]["valid"]] == [0, 2, 4]
    # the validation loss is the preference loss (DPO: log 2 while the policy is the base)
    assert [s for s, _ in m["metrics_history"]["valid"]] == [0, 2, 4]
    for (_, loss), (_, metrics) in zip(m["loss_history"]["valid"],
                                       m["metrics_history"]["valid"]):
        assert loss == pytest.approx(metrics["loss"], rel=1e-6)
    if objective == "dpo":
        assert m["loss_history"]["valid"][-1][1] == pytest.approx(math.log(2), abs=1e-6)


def test_the_memory_estimate_counts_both_rows_of_every_pair(tiny_model, tmp_path):
    folder = tiny_model("qwen2")
    net, _, config = load_model(folder)
    apply_adapters(net, make_config(rank=4))
    sft, dpo, orpo = (estimate(net, config, make_config(rank=4, batch_size=b, objective=o),
                               200, machine_bytes=10**12)
                      for b, o in ((8, "sft"), (4, "dpo"), (4, "orpo")))
    sft4 = estimate(net, config, make_config(rank=4, batch_size=4), 200, machine_bytes=10**12)
    assert dpo["activation_bytes"] == orpo["activation_bytes"] == sft["activation_bytes"]
    assert dpo["activation_bytes"] > sft4["activation_bytes"]
    # and a DPO run's Started event carries it
    rep = ListReporter()
    train_adapter(str(folder), write_pairs(tmp_path / "pairs.jsonl", n=12), "mem",
                  _cfg("dpo", iters=1, batch_size=4), report=rep)
    mem = rep.of(Started)[0].info["memory"]
    longest = mem["longest_example_tokens"]
    expected = estimate(net, config, make_config(rank=4, batch_size=8), longest,
                        machine_bytes=10**12)
    assert mem["activation_bytes"] == expected["activation_bytes"]
