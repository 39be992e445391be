"""The trained-token loss runs the output layer only on trained positions (engine/models/
token_loss.py split_head) on every fixture family, the newer ones (issue 17) included: its loss
and every LoRA gradient equal the full-logits path's, and head(body(x)) is the model's
forward."""
from __future__ import annotations

import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.models.token_loss import HEAD_STEP, split_head, trained_token_nll
from engine.tiny_models import ALL_KINDS, FAMILY_KINDS
from engine.train.batching import collate

from .test_packing import _Example, _lora_model


def _batch(vocab: int):
    rng = np.random.default_rng(5)
    examples = [_Example(rng.integers(3, vocab, n).tolist(), p)
                for n, p in ((37, 20), (9, 3), (24, 23), (30, 1))]
    return collate(examples, 128)


def _loss(split, trim: bool = False):
    def loss(model, b):
        ce = trained_token_nll(model, b.inputs, b.targets, b.index, split=split,
                               weight=b.weight if trim else None)
        return (ce * b.weight).sum() / b.weight.sum()
    return loss


def _assert_same(kind, got, want):
    (got_loss, got_grad), (want_loss, want_grad) = got, want
    np.testing.assert_allclose(got_loss.item(), want_loss.item(), rtol=1e-6, err_msg=kind)
    flat_g, flat_w = dict(tree_flatten(got_grad)), dict(tree_flatten(want_grad))
    assert flat_g.keys() == flat_w.keys() and flat_w
    for k in flat_w:
        np.testing.assert_allclose(np.array(flat_g[k]), np.array(flat_w[k]), atol=1e-6,
                                   rtol=1e-4, err_msg=f"{kind} {k}")


@pytest.mark.parametrize("kind", ALL_KINDS + FAMILY_KINDS)
def test_the_gathered_output_layer_gives_the_full_logits_loss_and_gradients(tiny_model, kind):
    net, config = _lora_model(tiny_model(kind))
    split = split_head(net)
    assert split[0] is not None, f"{kind} falls back to full logits"
    vocab = int(config.get("vocab_size") or config["text_config"]["vocab_size"])
    b = _batch(vocab)
    full = nn.value_and_grad(net, lambda m: _loss((None, None))(m, b))(net)
    _assert_same(kind, nn.value_and_grad(net, lambda m: _loss(split)(m, b))(net), full)
    # the trained loss (weights given): the last block's feed-forward on the trained rows only
    trimmed = nn.value_and_grad(net, lambda m: _loss(split, trim=True)(m, b))(net)
    _assert_same(f"{kind} (last feed-forward on trained rows)", trimmed, full)
    # head(body(x)) is the model's own forward at every position (softcap, scaling included)
    body, head = split
    np.testing.assert_allclose(np.array(head(body(b.inputs))), np.array(net(b.inputs)),
                               atol=1e-5, rtol=1e-5, err_msg=kind)


def test_a_family_outside_the_table_falls_back_to_full_logits(tiny_model):
    net, _ = _lora_model(tiny_model("qwen2"))
    net.args.model_type = "not_a_family"
    assert split_head(net) == (None, None)
    assert "not_a_family" not in HEAD_STEP


def test_the_last_feed_forward_sees_only_the_trained_rows(tiny_model):
    net, config = _lora_model(tiny_model("qwen2"))
    b = _batch(config["vocab_size"])
    last = net.model.layers[-1]
    seen = []
    original = type(last.mlp).__call__

    def recording(self, x):
        seen.append(x.shape[:-1])
        return original(self, x)

    type(last.mlp).__call__ = recording
    try:
        trained_token_nll(net, b.inputs, b.targets, b.index, weight=b.weight)
        trained_token_nll(net, b.inputs, b.targets, b.index)
    finally:
        type(last.mlp).__call__ = original
    every_block = len(net.model.layers)
    B, L = b.inputs.shape
    # trimmed: the last block's call holds the K index rows; untrimmed every call is B x L
    assert seen[every_block - 1] == (1, b.index.shape[0]) and b.index.shape[0] < B * L
    assert seen[every_block:] == [(B, L)] * every_block
    assert "mlp" in last and not isinstance(last.mlp, type(None))  # the module tree is back


@pytest.mark.parametrize("kind", ["gemma2", "qwen3_moe"])
def test_the_trimmed_loss_holds_with_packing_and_grad_checkpointing(tiny_model, kind):
    from engine.train.batching import collate_packed
    from engine.train.loop import _checkpoint_blocks
    from engine.train.loss import make_loss

    net, config = _lora_model(tiny_model(kind))
    rng = np.random.default_rng(2)
    examples = [_Example(rng.integers(3, config["vocab_size"], n).tolist(), p)
                for n, p in ((30, 12), (14, 2), (21, 20))]
    packed = collate_packed([examples[:2], examples[2:]], 64)
    loss = make_loss(net)
    args = (packed.inputs, packed.targets, packed.index, packed.weight, packed.segments)
    before = nn.value_and_grad(net, loss)(net, *args)
    want = nn.value_and_grad(net, lambda m, *a: (_full_packed(m, *a), None))(net, *args)
    _assert_same(kind, (before[0][0], before[1]), (want[0][0], want[1]))
    _checkpoint_blocks(net)
    net.train()  # dropout is 0: training mode changes nothing but the checkpointed blocks run
    after = nn.value_and_grad(net, loss)(net, *args)
    _assert_same(f"{kind} checkpointed", (after[0][0], after[1]), (want[0][0], want[1]))


def _full_packed(model, inputs, targets, index, weight, segments):
    from engine.train.packing import segment_caches

    ce = trained_token_nll(model, inputs, targets, index, cache=segment_caches(model, segments),
                           split=(None, None))
    return (ce * weight).sum() / weight.sum()
