"""DPO with --method dora and --method full: the cached reference is the base's values (DoRA:
its layers switched to their base layer, whatever the adapter and magnitudes hold; full: the
weights before step 1, never recomputed from trained ones), step 0 is log 2 on a fresh start,
and a full run resumed without its kept reference is refused."""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from engine.events import TailorError
from engine.models import load_model
from engine.train import checkpoint as ckpt
from engine.train.adapters import apply_adapters
from engine.train.config import make_config
from engine.train.preference import (REFERENCE_FILE, PairStream, PreferenceTrainer,
                                     reference_logps, summarize)
from tests.preference.test_reference_cache import _pairs


def _cfg(method, **kw):
    return make_config(**{**dict(method=method, rank=4, targets="all-linear", dropout=0.0,
                                 objective="dpo", batch_size=3, iters=3, eval_every=0,
                                 save_every=1, learning_rate=1e-3, schedule="constant",
                                 warmup=0.0), **kw})


def _trainer(folder, cfg, tmp_path, name="a"):
    net, _, _ = load_model(folder)
    mx.random.seed(3)
    apply_adapters(net, cfg)
    return PreferenceTrainer(net, cfg, _pairs(), _pairs(4), adapter_dir=tmp_path / name,
                             run_state={})


def _base_reference(folder, stream: PairStream) -> np.ndarray:
    """The reference log-probs of the base model loaded on its own (no adapter layers)."""
    base, _, _ = load_model(folder)
    plain = PairStream(stream.examples, stream.batch_size, stream.max_seq_length, 0)
    plain.share = stream.share
    return reference_logps(base, plain)


def test_dora_reference_is_the_base_whatever_the_adapter_holds(tiny_model, tmp_path):
    folder = tiny_model("qwen2")
    trainer = _trainer(folder, _cfg("dora"), tmp_path)
    rng = np.random.default_rng(0)
    for _, m in trainer.model.named_modules():  # B and the magnitudes away from their start
        if hasattr(m, "lora_b"):
            m.lora_b = mx.array(rng.normal(0, 0.05, m.lora_b.shape).astype(np.float32))
            m.m = m.m * 1.1
    trainer.prepare_reference()
    for stream in (trainer.train, trainer.valid):
        np.testing.assert_allclose(stream.reference, _base_reference(folder, stream),
                                   rtol=1e-6, atol=1e-5)
    b = trainer.train.batch(0)
    loss, _ = trainer.loss(trainer.model, b.inputs, b.targets, b.index, b.weight, b.segments)
    assert float(loss) != pytest.approx(math.log(2), abs=1e-3)  # the policy is not the base


def test_dora_step_zero_is_log_2_on_a_fresh_adapter(tiny_model, tmp_path):
    """B = 0 and each magnitude = its weight's norm: DoRA's layer is the base up to rounding
    (it computes x W^T and rescales by m / |W| = 1), so the loss is log 2 and the margins are
    rounding-sized, not exactly 0 as with LoRA."""
    trainer = _trainer(tiny_model("qwen2"), _cfg("dora"), tmp_path)
    trainer.prepare_reference()
    b = trainer.train.batch(0)
    loss, sums = trainer.loss(trainer.model, b.inputs, b.targets, b.index, b.weight,
                              b.segments)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-5)
    assert abs(summarize(np.array(sums))["reward_margin"]) < 1e-4


def test_full_dpo_reference_is_the_weights_before_step_1(tiny_model, tmp_path):
    folder = tiny_model("qwen2")
    trainer = _trainer(folder, _cfg("full"), tmp_path)
    result = trainer.run()
    assert result.step == 3
    first, last = (trainer.history.metrics["valid"][i][1] for i in (0, -1))
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["reward_ties"] == 4 and last["reward_ties"] == 0  # the weights moved
    kept = mx.load(str(tmp_path / "a" / "checkpoints" / REFERENCE_FILE))
    for split, stream in (("train", trainer.train), ("valid", trainer.valid)):
        np.testing.assert_array_equal(np.array(kept[split]), stream.reference)
        np.testing.assert_allclose(stream.reference, _base_reference(folder, stream),
                                   rtol=1e-6, atol=1e-5)


def test_full_dpo_resumed_without_its_reference_is_refused(tiny_model, tmp_path):
    folder = tiny_model("qwen2")
    _trainer(folder, _cfg("full", iters=2), tmp_path).run()
    (tmp_path / "a" / "checkpoints" / REFERENCE_FILE).unlink()
    resumed = _trainer(folder, _cfg("full", iters=4), tmp_path)
    resumed.restore(ckpt.latest_checkpoint(tmp_path / "a"))
    with pytest.raises(TailorError) as e:
        resumed.run()
    assert REFERENCE_FILE in str(e.value) and "cannot be computed again" in str(e.value)
    assert "new name" in e.value.hint
