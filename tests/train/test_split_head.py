"""The trained-token loss runs the output layer only on trained positions (engine/models/
token_loss.py split_head) on every fixture family, the newer ones (issue 17) included: its loss
and every LoRA gradient equal the full-logits path's, and head(body(x)) is the model's
forward."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

from engine.models import load_model
from engine.models.token_loss import HEAD_STEP, split_head, trained_token_nll
from engine.tiny_models import ALL_KINDS, FAMILY_KINDS
from engine.train.adapters import apply_adapters
from engine.train.batching import collate
from engine.train.config import make_config


class _Example:
    def __init__(self, tokens, prompt: int):
        self.tokens = tokens
        self.loss_mask = [0] * prompt + [1] * (len(tokens) - prompt)


def _lora_model(model_dir):
    net, _, config = load_model(model_dir)
    mx.random.seed(0)
    apply_adapters(net, make_config(rank=4, dropout=0.0))
    # B starts at zero: give it values so every adapter takes part in the comparison
    rng = np.random.default_rng(1)
    net.update(tree_unflatten(
        [(k, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
         for k, v in tree_flatten(net.trainable_parameters()) if k.endswith("lora_b")]))
    net.eval()
    return net, config


def _batch(vocab: int):
    rng = np.random.default_rng(5)
    examples = [_Example(rng.integers(3, vocab, n).tolist(), p)
                for n, p in ((37, 20), (9, 3), (24, 23), (30, 1))]
    return collate(examples, 128)


def _loss(split):
    def loss(model, b):
        ce = trained_token_nll(model, b.inputs, b.targets, b.index, split=split)
        return (ce * b.weight).sum() / b.weight.sum()
    return loss


@pytest.mark.parametrize("kind", ALL_KINDS + FAMILY_KINDS)
def test_the_gathered_output_layer_gives_the_full_logits_loss_and_gradients(tiny_model, kind):
    net, config = _lora_model(tiny_model(kind))
    split = split_head(net)
    assert split[0] is not None, f"{kind} falls back to full logits"
    vocab = int(config.get("vocab_size") or config["text_config"]["vocab_size"])
    b = _batch(vocab)
    split_loss, split_grad = nn.value_and_grad(net, lambda m: _loss(split)(m, b))(net)
    full_loss, full_grad = nn.value_and_grad(net, lambda m: _loss((None, None))(m, b))(net)
    np.testing.assert_allclose(split_loss.item(), full_loss.item(), rtol=1e-6)
    flat_s, flat_f = dict(tree_flatten(split_grad)), dict(tree_flatten(full_grad))
    assert flat_s.keys() == flat_f.keys() and flat_s
    for k in flat_f:
        np.testing.assert_allclose(np.array(flat_s[k]), np.array(flat_f[k]), atol=1e-6,
                                   rtol=1e-4, err_msg=f"{kind} {k}")
    # head(body(x)) is the model's own forward at every position (softcap, scaling included)
    body, head = split
    np.testing.assert_allclose(np.array(head(body(b.inputs))), np.array(net(b.inputs)),
                               atol=1e-5, rtol=1e-5, err_msg=kind)


def test_a_family_outside_the_table_falls_back_to_full_logits(tiny_model):
    net, _ = _lora_model(tiny_model("qwen2"))
    net.args.model_type = "not_a_family"
    assert split_head(net) == (None, None)
    assert "not_a_family" not in HEAD_STEP
