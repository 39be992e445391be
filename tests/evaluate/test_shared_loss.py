"""One implementation of the trained tokens' log-probabilities (engine/models/token_loss.py),
used by training's loss and by evaluation's held-out loss and probe: the eval's loss on a set
of examples is the trainer's loss on the same batch, and the eval, like training, runs the
output layer only on trained positions. Before, evaluate had its own copy (greedy.
answer_logprob) that computed full L x V logits for every position of an example."""
from __future__ import annotations

import random

import mlx.core as mx
import pytest

from engine.models import load_model
from engine.models import token_loss
from engine.models.token_loss import answer_logprob, split_head
from engine.train.batching import collate
from engine.train.loss import make_loss


class _Example:
    def __init__(self, tokens, mask):
        self.tokens, self.loss_mask = tokens, mask


def _examples(vocab: int, n: int = 5, seed: int = 0) -> list[_Example]:
    """Prompt (not trained) then answer (trained) of mixed lengths, random ids."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt, answer = rng.randint(3, 12), rng.randint(2, 9)
        out.append(_Example([rng.randrange(vocab) for _ in range(prompt + answer)],
                            [0] * prompt + [1] * answer))
    return out


@pytest.mark.parametrize("kind", ["qwen2", "gemma2"])
def test_the_evals_loss_is_the_trainers_loss_on_the_same_examples(kind, tiny_model):
    model, _, _ = load_model(tiny_model(kind))
    examples = _examples(model.args.vocab_size)
    batch = collate(examples, max_seq_length=512)
    trainer_loss, trained = make_loss(model)(model, batch.inputs, batch.targets, batch.index,
                                             batch.weight)
    scored = [answer_logprob(model, e.tokens, e.loss_mask) for e in examples]
    eval_loss = -sum(s for s, _ in scored) / sum(n for _, n in scored)
    assert sum(n for _, n in scored) == int(trained.item()) == batch.n_trained
    assert eval_loss == pytest.approx(trainer_loss.item(), rel=1e-5)
    # and it is the log-softmax of the full model's logits, position by position
    e = examples[0]
    logits = model(mx.array(e.tokens[:-1])[None])[0].astype(mx.float32)
    logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    expected = sum(logp[i, e.tokens[i + 1]].item() for i in range(len(e.tokens) - 1)
                   if e.loss_mask[i + 1])
    assert scored[0][0] == pytest.approx(expected, rel=1e-4)


def test_held_out_scoring_runs_the_output_layer_only_on_trained_positions(tiny_model,
                                                                          monkeypatch):
    from engine.evaluate import heldout

    model, _, _ = load_model(tiny_model("qwen2"))
    rows: list[int] = []
    body, head = split_head(model)
    inner = model.model.embed_tokens
    if "lm_head" in model:
        original = model.lm_head
        model.lm_head = _Counting(original, rows)
    else:
        original = inner.as_linear
        # count through mlx's as_linear (the tied head otherwise takes fast_linear's matmul_t)
        monkeypatch.setattr(token_loss, "embedding_as_linear", lambda embedding: None)
        monkeypatch.setattr(inner, "as_linear", lambda h: rows.append(
            h.reshape(-1, h.shape[-1]).shape[0]) or original(h))
    e = _Example(list(range(3, 40)), [0] * 30 + [1] * 7)  # a long prompt, a short answer
    heldout_logprob = _held_out_scorer(heldout)
    total, n = heldout_logprob(model, e.tokens, e.loss_mask)
    assert n == 7 and rows == [7]  # not 36 rows x vocabulary


class _Counting:
    def __init__(self, layer, rows):
        self.layer, self.rows = layer, rows

    def __call__(self, h):
        self.rows.append(h.reshape(-1, h.shape[-1]).shape[0])
        return self.layer(h)


def _held_out_scorer(heldout):
    """The function engine/evaluate/heldout.py scores each example with."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(heldout))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == "answer_logprob"
                                                     for a in node.names):
            import importlib

            name = importlib.util.resolve_name("." * node.level + node.module,
                                               "engine.evaluate")
            return importlib.import_module(name).answer_logprob
    raise AssertionError("heldout.py imports no answer_logprob")
