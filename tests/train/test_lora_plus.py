"""LoRA+ (--lora-plus-ratio): B's learning rate is ratio x A's, everything else unchanged, and a
LoRA+ run resumes exactly."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from engine import library
from engine.events import Cancelled, CancelToken, Checkpoint, TailorError
from engine.models import load_model
from engine.train import checkpoint as ckpt
from engine.train.adapters import apply_adapters, trainable_weights
from engine.train.batching import collate
from engine.train.config import make_config, merge_resume_config
from engine.train.loop import build_optimizer, build_schedule
from engine.train.loss import make_loss
from engine.train.run import train_adapter

from .conftest import write_toy_chat

LR, WD, RATIO = 1e-3, 0.01, 16.0


class _Example:
    def __init__(self, tokens):
        self.tokens, self.loss_mask = tokens, [0] * 3 + [1] * (len(tokens) - 3)


def _one_step(model_dir, method: str, ratio: float, quantize: int = 0):
    """Parameters before, gradients, and parameters after one optimizer step."""
    net, _, _ = load_model(model_dir, quantize or None)
    cfg = make_config(method=method, rank=4, lora_plus_ratio=ratio, learning_rate=LR,
                      weight_decay=WD, warmup=0.0, schedule="constant", dropout=0.0,
                      quantize_base=quantize)
    mx.random.seed(0)
    apply_adapters(net, cfg)
    # B starts at zero, which makes A's first gradient zero: give B values so both move
    rng = np.random.default_rng(1)
    net.update(tree_unflatten(
        [(k, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
         for k, v in tree_flatten(net.trainable_parameters()) if k.endswith("lora_b")]))
    batch = collate([_Example(list(range(5, 25))), _Example(list(range(40, 52)))], 64)
    loss = make_loss(net)
    _, grads = nn.value_and_grad(net, loss)(net, batch.inputs, batch.targets, batch.index,
                                            batch.weight)
    before = {k: np.array(v) for k, v in trainable_weights(net).items()}
    opt = build_optimizer(cfg, build_schedule(cfg, 10))
    opt.init(net.trainable_parameters())
    opt.update(net, grads)
    mx.eval(net.parameters())
    after = {k: np.array(v) for k, v in trainable_weights(net).items()}
    return before, {k: np.array(v) for k, v in tree_flatten(grads)}, after


@pytest.mark.parametrize("method,quantize", [("lora", 0), ("dora", 0), ("lora", 4)],
                         ids=["lora", "dora", "qlora"])
def test_one_step_matches_a_hand_computed_adamw_step_with_b_at_ratio_times_the_rate(
        tiny_model, method, quantize):
    before, grads, after = _one_step(tiny_model("qwen2"), method, RATIO, quantize)
    kinds = {k.rsplit(".", 1)[-1] for k in before}
    assert {"lora_a", "lora_b"} <= kinds and (method != "dora" or "m" in kinds)
    for k, p in before.items():
        g = grads[k]
        lr = RATIO * LR if k.endswith("lora_b") else LR  # DoRA's magnitude "m": A's rate
        # mlx's AdamW, first step, no bias correction: m = 0.1 g, v = 0.001 g^2
        expected = p * (1 - lr * WD) - lr * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-8)
        np.testing.assert_allclose(after[k], expected, rtol=1e-5, atol=1e-7, err_msg=k)
        assert np.abs(after[k] - p).max() > 0, k  # every kind really moved


def test_only_bs_step_changes_with_the_ratio(tiny_model):
    before, _, plain = _one_step(tiny_model("qwen2"), "dora", 0.0)
    _, _, plus = _one_step(tiny_model("qwen2"), "dora", RATIO)
    for k in before:
        if k.endswith("lora_b"):  # the Adam step without decay scales with the rate
            step_plain = plain[k] - before[k] * (1 - LR * WD)
            step_plus = plus[k] - before[k] * (1 - RATIO * LR * WD)
            np.testing.assert_allclose(step_plus, RATIO * step_plain, rtol=1e-4, atol=1e-9)
        else:
            np.testing.assert_array_equal(plus[k], plain[k], err_msg=k)


def test_full_fine_tuning_refuses_the_ratio_and_resume_keeps_it_fixed():
    with pytest.raises(TailorError, match="lora_plus_ratio applies to LoRA/DoRA adapters"):
        make_config(method="full", lora_plus_ratio=16)
    make_config(method="full", lora_plus_ratio=1)  # 1 is off
    saved = make_config(iters=12, lora_plus_ratio=16)
    with pytest.raises(TailorError) as e:
        merge_resume_config(saved, {"lora_plus_ratio": 4.0}, "run")
    assert ("lora_plus_ratio 16 -> 4.0 (it is part of the optimisation the checkpoint is "
            "partway through)") in e.value.message


def _cfg():
    return make_config(iters=12, save_every=4, eval_every=0, learning_rate=2e-3, rank=4,
                       batch_size=2, grad_accumulation=2, dropout=0.1, lora_plus_ratio=RATIO,
                       method="dora")


def test_a_stopped_and_resumed_lora_plus_run_equals_an_uninterrupted_one(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    train_adapter(str(model_dir), data, "straight", _cfg())
    cancel = CancelToken()

    def stop_at_first_checkpoint(event):
        if isinstance(event, Checkpoint):
            cancel.cancel("test stop")

    with pytest.raises(Cancelled):
        train_adapter(str(model_dir), data, "resumed", _cfg(), report=stop_at_first_checkpoint,
                      cancel=cancel)
    stopped = ckpt.latest_checkpoint(library.get_adapter("resumed").path)
    assert stopped.state["step"] == 4
    a_state, b_state = stopped.optimizer["states"][1], stopped.optimizer["states"][0]
    assert float(b_state["learning_rate"]) == pytest.approx(RATIO * float(
        a_state["learning_rate"]))
    train_adapter(None, None, "resumed", resume=True)

    straight, resumed = (ckpt.latest_checkpoint(library.get_adapter(n).path)
                         for n in ("straight", "resumed"))
    assert straight.state["step"] == resumed.state["step"] == 12
    for k, v in straight.weights.items():  # bit-exact: weights and both optimizers' state
        np.testing.assert_array_equal(np.array(v), np.array(resumed.weights[k]), err_msg=k)
    flat_s, flat_r = dict(tree_flatten(straight.optimizer)), dict(tree_flatten(resumed.optimizer))
    assert flat_s.keys() == flat_r.keys()
    for k in flat_s:
        np.testing.assert_array_equal(np.array(flat_s[k]), np.array(flat_r[k]), err_msg=k)
    assert library.get_adapter("resumed").manifest["settings"]["lora_plus_ratio"] == RATIO
