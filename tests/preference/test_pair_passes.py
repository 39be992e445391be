"""A batch of pairs runs as a shared-prompt pass plus one pass per side (each at its own width):
its log-probs, DPO loss and gradients equal one joint pass over all 2B full rows (the
computation it replaces, written out here) on every family whose attention takes the stand-in
caches, a sliding window included; families without them run plain per-side passes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine.data.prepare import TokenizedExample
from engine.data.preference import PreferencePair
from engine.models import load_model
from engine.models.token_loss import trained_token_nll
from engine.train.adapters import apply_adapters
from engine.train.batching import collate
from engine.train.config import make_config
from engine.train.pair_passes import shares_prompts
from engine.train.preference import collate_pairs, dpo_terms, make_preference_loss
from tests.conftest import edited_copy


def _pairs(vocab: int, n: int = 5):
    rng = np.random.default_rng(0)

    def side(p, a):
        return TokenizedExample(p + a, [0] * len(p) + [1] * len(a), "t:1")

    out = []
    for i in range(n):  # prompts and answers of different lengths; rejected ones shorter
        p = rng.integers(3, vocab, int(rng.integers(2, 30))).tolist()
        c = rng.integers(3, vocab, int(rng.integers(1, 25))).tolist()
        r = rng.integers(3, vocab, int(rng.integers(1, 9))).tolist()
        out.append(PreferencePair(side(p, c), side(p, r), f"t:{i + 1}"))
    return out


def _model(folder):
    net, _, config = load_model(folder)
    cfg = make_config(rank=4, dropout=0.0, objective="dpo", targets="all-linear", beta=0.3)
    mx.random.seed(0)
    apply_adapters(net, cfg)
    rng = np.random.default_rng(1)
    for _, m in net.named_modules():  # the policy differs from the base
        if hasattr(m, "lora_b"):
            m.lora_b = mx.array(rng.normal(0, 0.05, m.lora_b.shape).astype(np.float32))
    return net, cfg, config


def _joint_loss(cfg, pairs, reference):
    """The DPO loss of one pass over 2B full rows (chosen first), as before the split."""
    b = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], 512)
    width = b.inputs.shape[1]
    rows = np.array(b.index) // width
    owner = mx.array(((rows[None, :] == np.arange(2 * len(pairs))[:, None])
                      * np.array(b.weight)[None, :]).astype(np.float32))

    def loss(model):
        token = -trained_token_nll(model, b.inputs, b.targets, b.index)
        return dpo_terms(owner @ token, reference, cfg.beta, 0.0)[0]

    return loss


def _check(net, cfg, vocab, share_expected=True):
    pairs = _pairs(vocab)
    assert shares_prompts(net) is share_expected
    b = collate_pairs(pairs, 512, share=share_expected)
    assert (b.prompt is not None) is share_expected
    if share_expected:  # the prompts are computed once, each side padded to its own answers
        assert b.inputs[1].shape[1] < b.inputs[0].shape[1]
    reference = mx.array(np.random.default_rng(2).normal(-50, 5, 2 * len(pairs))
                         .astype(np.float32))
    segments = {**b.segments, "reference": reference}
    split_loss = make_preference_loss(net, cfg)
    (l_s, _), g_s = nn.value_and_grad(net, split_loss)(net, b.inputs, b.targets, b.index,
                                                       b.weight, segments)
    l_j, g_j = nn.value_and_grad(net, _joint_loss(cfg, pairs, reference))(net)
    assert float(l_s) == pytest.approx(float(l_j), rel=1e-5)
    flat_s, flat_j = dict(tree_flatten(g_s)), dict(tree_flatten(g_j))
    assert flat_s.keys() == flat_j.keys() and flat_s
    for k in flat_s:
        np.testing.assert_allclose(np.array(flat_s[k]), np.array(flat_j[k]), atol=2e-6,
                                   rtol=1e-4, err_msg=k)


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "gemma2", "phi3"])
def test_split_passes_equal_one_joint_pass(tiny_model, kind):
    net, cfg, config = _model(tiny_model(kind))
    _check(net, cfg, config["vocab_size"])


def test_split_passes_keep_a_sliding_window(tiny_model):
    """gemma3's local layers with a window of 8, shorter than the prompts: the answers' masks
    bound each token's window by its own position, as in the full row."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = edited_copy(tiny_model("gemma3"), Path(tmp) / "g3",
                             config={"sliding_window": 8})
        net, cfg, config = _model(folder)
        assert net.args.sliding_window == 8
        _check(net, cfg, config["vocab_size"])


def test_other_families_run_plain_passes_per_side(tiny_model):
    net, cfg, config = _model(tiny_model("mixtral"))
    _check(net, cfg, config["vocab_size"], share_expected=False)
