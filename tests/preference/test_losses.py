"""DPO and ORPO against a straightforward implementation written here (full logits, log-softmax
in float64, gathered log-probabilities, the published formulas), on a fixed batch of a tiny
model with a LoRA adapter; and step 0: a zero-initialised adapter gives DPO exactly log 2 with
every pair a tie (left out of the reward accuracy)."""
from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from engine.data.prepare import TokenizedExample
from engine.data.preference import PreferencePair
from engine.models import load_model
from engine.train.adapters import apply_adapters
from engine.train.config import make_config
from engine.train.pair_passes import shares_prompts
from engine.train.preference import collate_pairs, make_preference_loss, summarize

# (prompt, chosen answer, rejected answer) token ids: answers of different lengths, so the
# padding and the owner matrix matter
PAIRS = [([5, 9, 14, 3], [20, 21, 22], [30, 31]),
         ([7, 2, 11], [40, 41, 42, 43, 44], [50, 51, 52]),
         ([8, 8, 1, 6, 4], [60], [70, 71, 72, 73])]


def pairs():
    def side(p, a):
        return TokenizedExample(p + a, [0] * len(p) + [1] * len(a), "t:1")

    return [PreferencePair(side(p, c), side(p, r), f"t:{i}") for i, (p, c, r) in
            enumerate(PAIRS)]


def _seq_logp(model, prompt, answer) -> tuple[float, int]:
    """Sum of log p(answer token | everything before), from the full logits."""
    seq = prompt + answer
    logits = np.array(model(mx.array([seq[:-1]])).astype(mx.float32), dtype=np.float64)[0]
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    positions = range(len(prompt) - 1, len(seq) - 1)
    return sum(logp[t, seq[t + 1]] for t in positions), len(answer)


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x > -30 else x


@pytest.fixture
def models(tiny_model):
    folder = tiny_model("qwen2")
    base, _, _ = load_model(folder)
    net, _, _ = load_model(folder)
    mx.random.seed(3)
    cfg = make_config(rank=4, targets="all-linear", dropout=0.0)
    apply_adapters(net, cfg)
    return base, net


def _randomize_b(net) -> None:
    rng = np.random.default_rng(0)
    for _, m in net.named_modules():
        if hasattr(m, "lora_b"):
            m.lora_b = mx.array(rng.normal(0, 0.05, m.lora_b.shape).astype(np.float32))


def _engine(net, **kw):
    cfg = make_config(rank=4, dropout=0.0, **kw)
    b = collate_pairs(pairs(), 64, share=shares_prompts(net))  # the prompt pass included
    loss, sums = make_preference_loss(net, cfg)(net, b.inputs, b.targets, b.index, b.weight,
                                                b.segments)
    return float(loss), summarize(np.array(sums))


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_dpo_matches_the_published_formula(models, smoothing):
    base, net = models
    _randomize_b(net)
    beta = 0.3
    losses, margins, chosen = [], [], []
    for p, c, r in PAIRS:
        pc, _ = _seq_logp(net, p, c)
        pr, _ = _seq_logp(net, p, r)
        rc, _ = _seq_logp(base, p, c)   # the reference: the base model, loaded on its own
        rr, _ = _seq_logp(base, p, r)
        z = beta * ((pc - rc) - (pr - rr))
        losses.append(-(1 - smoothing) * _log_sigmoid(z) - smoothing * _log_sigmoid(-z))
        margins.append(z)
        chosen.append(pc)
    loss, m = _engine(net, objective="dpo", beta=beta, label_smoothing=smoothing)
    assert loss == pytest.approx(np.mean(losses), abs=1e-5)
    assert m["loss"] == pytest.approx(np.mean(losses), abs=1e-5)
    assert m["reward_margin"] == pytest.approx(np.mean(margins), abs=1e-5)
    assert m["chosen_logp"] == pytest.approx(np.mean(chosen), abs=1e-4)
    assert m["reward_accuracy"] == pytest.approx(np.mean([z > 0 for z in margins]))
    assert m["reward_ties"] == 0


def test_orpo_matches_the_published_formula(models):
    _, net = models
    _randomize_b(net)
    lam = 0.25
    nll_sum = nll_n = 0.0
    ratios = []
    for p, c, r in PAIRS:
        pc, nc = _seq_logp(net, p, c)
        pr, nr = _seq_logp(net, p, r)
        nll_sum, nll_n = nll_sum - pc, nll_n + nc
        ac, ar = pc / nc, pr / nr
        log_odds = (ac - math.log1p(-math.exp(ac))) - (ar - math.log1p(-math.exp(ar)))
        ratios.append(_log_sigmoid(log_odds))
    expected = nll_sum / nll_n - lam * np.mean(ratios)
    loss, m = _engine(net, objective="orpo", orpo_lambda=lam)
    assert loss == pytest.approx(expected, abs=1e-5)
    assert m["nll"] == pytest.approx(nll_sum / nll_n, abs=1e-5)
    assert m["odds_ratio"] == pytest.approx(-np.mean(ratios), abs=1e-5)


def test_step_zero_dpo_is_log_2_and_ties_are_not_counted(models):
    _, net = models  # LoRA B is zero-initialised: the policy is the reference exactly
    loss, m = _engine(net, objective="dpo")
    assert loss == pytest.approx(math.log(2), abs=1e-6)
    assert m["reward_accuracy"] is None and m["reward_ties"] == len(PAIRS)
    assert m["reward_margin"] == 0.0
