"""engine/models/fast_linear.py: the linear layers' fast layout gives the same loss and
gradients as nn.Linear's own forward (LoRA on every fixture family, full fine-tuning's weight
gradients, biases), and the model's classes are restored after the loss."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.models.fast_linear import addmm_t, fast_linears, matmul_t, plain_linears
from engine.models.load import load_model
from engine.tiny_models import ALL_KINDS, FAMILY_KINDS
from engine.train.adapters import apply_adapters
from engine.train.batching import collate
from engine.train.config import make_config
from engine.train.loss import make_loss
from engine.models import token_loss
from engine.models.token_loss import split_head, trained_token_nll

from .test_packing import _Example, _lora_model


def _batch(vocab: int):
    rng = np.random.default_rng(7)
    return collate([_Example(rng.integers(3, vocab, n).tolist(), p)
                    for n, p in ((29, 9), (12, 3), (40, 2))], 128)


def _plain_loss(split):
    """make_loss's arithmetic with nn.Linear's own forward (no fast layout)."""
    def loss(model, b):
        ce = trained_token_nll(model, b.inputs, b.targets, b.index, split=split,
                               weight=b.weight)
        return (ce * b.weight).sum() / b.weight.sum()
    return loss


def _assert_equal_grads(what, got, want):
    """Within float32 rounding: the fixtures' tiny shapes take sgemm paths whose sums differ in
    order (the bench's shapes gave bit-identical gradients); tolerances as test_split_head's."""
    flat_g, flat_w = dict(tree_flatten(got)), dict(tree_flatten(want))
    assert flat_g.keys() == flat_w.keys() and flat_w
    for k in flat_w:
        np.testing.assert_allclose(np.array(flat_g[k]), np.array(flat_w[k]), atol=2e-6,
                                   rtol=1e-4, err_msg=f"{what} {k}")


def _reference_split(net, monkeypatch):
    """split_head with mlx's own tied output layer (``Embedding.as_linear``)."""
    with monkeypatch.context() as m:
        m.setattr(token_loss, "embedding_as_linear", lambda embedding: None)
        return split_head(net)


@pytest.mark.parametrize("kind", ALL_KINDS + FAMILY_KINDS)
def test_the_fast_layout_gives_nn_linears_loss_and_gradients(tiny_model, kind, monkeypatch):
    net, config = _lora_model(tiny_model(kind))
    vocab = int(config.get("vocab_size") or config["text_config"]["vocab_size"])
    b = _batch(vocab)
    fast = make_loss(net)
    got_loss, got = nn.value_and_grad(
        net, lambda m: fast(m, b.inputs, b.targets, b.index, b.weight)[0])(net)
    reference = _plain_loss(_reference_split(net, monkeypatch))
    want_loss, want = nn.value_and_grad(net, lambda m: reference(m, b))(net)
    np.testing.assert_allclose(got_loss.item(), want_loss.item(), rtol=1e-6, err_msg=kind)
    _assert_equal_grads(kind, got, want)
    assert all(type(m) is nn.Linear for m in plain_linears(net))  # restored after the loss


def test_full_fine_tuning_weight_and_bias_gradients_match(tiny_model, monkeypatch):
    """The custom VJP's weight and bias cotangents (full fine-tuning trains them)."""
    net, _, config = load_model(tiny_model("qwen2"))  # qwen2: q/k/v have biases
    apply_adapters(net, make_config(method="full", num_layers=1))
    b = _batch(config["vocab_size"])
    fast = make_loss(net)
    got_loss, got = nn.value_and_grad(
        net, lambda m: fast(m, b.inputs, b.targets, b.index, b.weight)[0])(net)
    reference = _plain_loss(_reference_split(net, monkeypatch))
    want_loss, want = nn.value_and_grad(net, lambda m: reference(m, b))(net)
    names = [k for k, _ in tree_flatten(got)]
    assert any(k.endswith("q_proj.bias") for k in names)
    assert any(k.endswith("mlp.down_proj.weight") for k in names)
    np.testing.assert_allclose(got_loss.item(), want_loss.item(), rtol=1e-6)
    _assert_equal_grads("full", got, want)


def test_matmul_t_and_addmm_t_equal_the_transposed_product_and_its_vjp():
    rng = np.random.default_rng(0)
    x = mx.array(rng.normal(size=(2, 5, 6)).astype(np.float32))
    w = mx.array(rng.normal(size=(4, 6)).astype(np.float32))
    bias = mx.array(rng.normal(size=(4,)).astype(np.float32))
    np.testing.assert_allclose(np.array(matmul_t(x, w)), np.array(x @ w.T), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.array(addmm_t(bias, x, w)),
                               np.array(mx.addmm(bias, x, w.T)), rtol=1e-5, atol=1e-6)
    cot = mx.array(rng.normal(size=(2, 5, 4)).astype(np.float32))
    _, got = mx.vjp(lambda b_, x_, w_: addmm_t(b_, x_, w_), [bias, x, w], [cot])
    _, want = mx.vjp(lambda b_, x_, w_: mx.addmm(b_, x_, w_.T), [bias, x, w], [cot])
    for g, e in zip(got, want):
        np.testing.assert_allclose(np.array(g), np.array(e), rtol=1e-5, atol=1e-6)


def test_the_classes_are_restored_when_the_loss_raises(tiny_model):
    net, _ = _lora_model(tiny_model("llama3"))
    linears = plain_linears(net)
    assert linears
    with pytest.raises(RuntimeError):
        with fast_linears(linears):
            assert all(type(m) is not nn.Linear for m in linears)
            raise RuntimeError("a failing forward")
    assert all(type(m) is nn.Linear for m in linears)


def test_off_the_cpu_the_layers_keep_their_own_forward(tiny_model, monkeypatch):
    # a GPU's matmul reads W.T in place: there the copy would only cost bandwidth
    from engine.models import fast_linear
    net, _ = _lora_model(tiny_model("llama3"))
    assert plain_linears(net) and fast_linear.embedding_as_linear(nn.Embedding(8, 4))
    monkeypatch.setattr(fast_linear, "layout_pays", lambda: False)
    assert plain_linears(net) == []
    assert fast_linear.embedding_as_linear(nn.Embedding(8, 4)) is None
