"""Training works on every fixture architecture: the loss falls on a learnable toy task and the
adapter, loaded by mlx-lm itself (`load(..., adapter_path=)`), makes the model give the answer
it was taught."""
from __future__ import annotations

import mlx_lm
import pytest

from engine.events import ListReporter, Step, Validation
from engine.train.config import make_config
from engine.train.run import train_adapter

from .conftest import ANSWER

# Tiny Gemma 2/3 normalise each block's output (post-norms) while the scaled input embedding is
# ~8x larger, so LoRA on the linear layers cannot outvote the token's own embedding in a
# 2-layer toy; real Gemma models do not have that problem. There the loss still falls under
# LoRA (asserted) and the generation check uses a full fine-tune, which trains the norms too.
POST_NORM_TOYS = {"gemma2", "gemma3"}


def _generate(model_dir, adapter_dir, prompt: str) -> str:
    model, tok = mlx_lm.load(str(model_dir), adapter_path=str(adapter_dir))
    text = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                   add_generation_prompt=True)
    return mlx_lm.generate(model, tok, text, max_tokens=8)


def test_loss_falls_and_generation_follows(any_tiny_model, toy_data, tmp_path):
    kind, model_dir = any_tiny_model
    base_model, base_tok = mlx_lm.load(str(model_dir))
    prompt = "Tell me about the book number 999."
    base_text = base_tok.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True)
    assert not mlx_lm.generate(base_model, base_tok, base_text, max_tokens=8).startswith(ANSWER)

    rep = ListReporter()
    cfg = make_config(iters=40, learning_rate=2e-3, rank=8, dropout=0.0, eval_every=20)
    info = train_adapter(str(model_dir), toy_data, f"toy-{kind}", cfg, report=rep)
    vals = [v.val_loss for v in rep.of(Validation)]
    assert len(vals) == 3 and vals[-1] < 0.5 * vals[0], vals
    steps = rep.of(Step)
    assert [s.iteration for s in steps] == list(range(1, 41))
    assert info.manifest["status"] == "finished"
    assert info.manifest["best_val_loss"] == pytest.approx(min(vals))

    if kind in POST_NORM_TOYS:
        cfg = make_config(iters=60, learning_rate=1e-2, method="full", eval_every=0)
        info = train_adapter(str(model_dir), toy_data, f"toy-full-{kind}", cfg)
    out = _generate(model_dir, info.path, prompt)
    assert out.startswith(ANSWER), f"{kind}: {out!r}"
