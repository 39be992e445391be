"""DPO's reference log-probs are computed once before step 1 (the base is frozen): the cached
values equal the per-step reference pass's on every training batch, step 0 is still log 2, the
training steps no longer run a reference pass, the pre-pass reports progress and can be
cancelled, and a resumed run reloads the values it started with."""
from __future__ import annotations

import math
from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from engine.data.prepare import TokenizedExample
from engine.data.preference import PreferencePair
from engine.events import CancelToken, Cancelled, ListReporter, Progress
from engine.models import load_model
from engine.train import preference
from engine.train.adapters import apply_adapters
from engine.train.config import make_config
from engine.train.preference import (REFERENCE_FILE, PreferenceTrainer, adapters_off,
                                     sequence_logps, summarize)
from engine.train.loss import split_head


def _pairs(n: int = 7):
    rng = np.random.default_rng(1)

    def side(p, a):
        return TokenizedExample(p + a, [0] * len(p) + [1] * len(a), "t:1")

    out = []
    for i in range(n):  # prompts and answers of different lengths: batches pad differently
        p = rng.integers(3, 600, int(rng.integers(2, 20))).tolist()
        c = rng.integers(3, 600, int(rng.integers(1, 12))).tolist()
        r = rng.integers(3, 600, int(rng.integers(1, 12))).tolist()
        out.append(PreferencePair(side(p, c), side(p, r), f"t:{i + 1}"))
    return out


def _trainer(tiny_model, tmp_path, randomize=True, cancel=None):
    net, _, _ = load_model(tiny_model("qwen2"))
    mx.random.seed(3)
    cfg = make_config(rank=4, targets="all-linear", dropout=0.0, objective="dpo",
                      batch_size=3, iters=4, eval_every=0, save_every=100, learning_rate=1e-3)
    apply_adapters(net, cfg)
    if randomize:  # the policy differs from the base: the cache must hold the base's values
        rng = np.random.default_rng(0)
        for _, m in net.named_modules():
            if hasattr(m, "lora_b"):
                m.lora_b = mx.array(rng.normal(0, 0.05, m.lora_b.shape).astype(np.float32))
    report = ListReporter()
    trainer = PreferenceTrainer(net, cfg, _pairs(), _pairs(4), adapter_dir=tmp_path / "a",
                                run_state={}, report=report, cancel=cancel)
    return trainer, report


def _per_step_reference(trainer, batch):
    with adapters_off(trainer.model):
        ref, _ = sequence_logps(trainer.model, split_head(trainer.model), batch.inputs,
                                batch.targets, batch.index, batch.weight,
                                replace(batch, reference=None).segments)
    return np.array(ref)


def test_cached_reference_equals_the_per_step_pass_on_every_batch(tiny_model, tmp_path):
    trainer, report = _trainer(tiny_model, tmp_path)
    trainer.prepare_reference()
    assert (tmp_path / "a" / "checkpoints" / REFERENCE_FILE).is_file()
    for micro in range(2 * trainer.train.per_epoch):  # two epochs: other batch mixes
        b = trainer.train.batch(micro)
        np.testing.assert_allclose(np.array(b.reference), _per_step_reference(trainer, b),
                                   rtol=1e-6, atol=1e-6)
        cached = trainer.loss(trainer.model, b.inputs, b.targets, b.index, b.weight, b.segments)
        per_step = trainer.loss(trainer.model, b.inputs, b.targets, b.index, b.weight,
                                replace(b, reference=None).segments)
        assert float(cached[0]) == pytest.approx(float(per_step[0]), abs=1e-6)
        assert float(cached[0]) != pytest.approx(math.log(2), abs=1e-3)  # policy != base
    for b in trainer.valid.all_in_order():
        np.testing.assert_allclose(np.array(b.reference), _per_step_reference(trainer, b),
                                   rtol=1e-6, atol=1e-6)
    progress = report.of(Progress)
    assert progress and all(e.stage == "reference" for e in progress)
    assert (progress[-1].done, progress[-1].total) == (4, 4)  # the valid pairs last
    assert any((e.done, e.total) == (7, 7) for e in progress)


def test_step_zero_with_the_cache_is_log_2_with_every_pair_a_tie(tiny_model, tmp_path):
    trainer, _ = _trainer(tiny_model, tmp_path, randomize=False)
    trainer.prepare_reference()
    b = trainer.train.batch(0)
    loss, sums = trainer.loss(trainer.model, b.inputs, b.targets, b.index, b.weight, b.segments)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-6)
    m = summarize(np.array(sums))
    assert m["reward_accuracy"] is None and m["reward_ties"] == 3


def test_training_steps_run_no_reference_pass(tiny_model, tmp_path, monkeypatch):
    trainer, _ = _trainer(tiny_model, tmp_path)
    calls = []
    real = preference.adapters_off

    def counting(model):
        calls.append(1)
        return real(model)

    monkeypatch.setattr(preference, "adapters_off", counting)
    result = trainer.run()
    assert result.step == 4
    assert len(calls) == 2  # the pre-pass: once for the train pairs, once for the valid ones


def test_the_pre_pass_can_be_cancelled(tiny_model, tmp_path):
    cancel = CancelToken()
    cancel.cancel("stop requested")
    trainer, _ = _trainer(tiny_model, tmp_path, cancel=cancel)
    with pytest.raises(Cancelled):
        trainer.run()
    assert not (tmp_path / "a" / "checkpoints" / REFERENCE_FILE).exists()
    assert trainer.step == 0


def test_a_resumed_run_reloads_the_kept_values(tiny_model, tmp_path):
    trainer, _ = _trainer(tiny_model, tmp_path)
    trainer.prepare_reference()
    file = tmp_path / "a" / "checkpoints" / REFERENCE_FILE
    kept = {k: np.array(v) for k, v in mx.load(str(file)).items()}
    marked = {k: v + 1.0 for k, v in kept.items()}  # recognisable: not what a pass computes
    mx.save_safetensors(str(file), {k: mx.array(v) for k, v in marked.items()})

    resumed, _ = _trainer(tiny_model, tmp_path)
    resumed._resumed = True
    resumed.prepare_reference()
    np.testing.assert_array_equal(resumed.train.reference, marked["train"])
    np.testing.assert_array_equal(resumed.valid.reference, marked["valid"])

    fresh, _ = _trainer(tiny_model, tmp_path)  # not a resume: computed again, same values
    fresh.prepare_reference()
    np.testing.assert_array_equal(fresh.train.reference, kept["train"])
