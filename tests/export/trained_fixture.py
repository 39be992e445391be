"""A fixture model trained from its random init on its own data, for measuring what an
importance matrix buys (issue 21): random-weight fixtures have nearly isotropic activations,
nothing for a matrix to exploit, so their KL figures say little about real models.

``pretrain_fixture`` trains every parameter of a tiny model (embeddings and head included,
plain MLX, AdamW, next-token loss on every position) on a token stream of rendered arithmetic
chats and the tiny tokenizers' word corpus, and saves the result as a new model folder beside
nothing of the original's. ``sums_chats`` writes the chat data; the pairs of numbers of the
pretraining and of a later fine-tune differ (``offset``), so a fine-tune's held-out split is
not pretraining data. Used by bench/imatrix_quality.py and tests/export/test_imatrix_trained.py.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path


def sums(n: int, offset: int = 0) -> list[dict]:
    """n chats "What is A plus B?" -> "A plus B is C." (distinct pairs below 1000 for
    n <= 997; ``offset`` shifts to other pairs)."""
    out = []
    for i in range(offset, offset + n):
        a, b = (i * 37) % 1000, (i * 11) % 997
        out.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                 {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]})
    return out


def write_sums(path: Path, n: int, offset: int = 0) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for chat in sums(n, offset):
            f.write(json.dumps(chat) + "\n")
    return path


@dataclass
class Pretrained:
    """What pretraining did: the folder, the losses (nats per token) of the random init and
    of the trained model on held-out windows, ln(vocab) (a uniform guess), steps, CPU s,
    the outlier channels trained with."""

    folder: Path
    loss_before: float
    loss_after: float
    uniform: float
    steps: int
    cpu_s: float
    outliers: list[tuple[int, float]]  # (channel, factor) scaled from the init; [] for none


def _stream(folder: Path, chats: list[dict], text_lines: int, seed: int) -> list[int]:
    """The pretraining tokens: every chat rendered by the model's template and the word
    corpus' lines, shuffled together, each ended by EOS."""
    import random

    from transformers import AutoTokenizer

    from engine.tiny_models import corpus

    tok = AutoTokenizer.from_pretrained(str(folder))
    docs = [tok.apply_chat_template(c["messages"], tokenize=False) for c in chats]
    docs += corpus(text_lines, seed=seed)
    random.Random(seed).shuffle(docs)
    eos = tok.eos_token_id
    out: list[int] = []
    for d in docs:
        out += list(tok.encode(d, add_special_tokens=False)) + ([eos] if eos is not None else [])
    return out


def outlier_scale(width: int, n: int, seed: int):
    """Per channel factors: ``n`` seeded channels of ``width`` at 10-30x, the rest 1 ->
    (float32 [width], [(channel, factor)])."""
    import numpy as np

    rng = np.random.default_rng(seed)
    channels = sorted(rng.choice(width, size=n, replace=False).tolist())
    scale = np.ones(width, dtype=np.float32)
    scale[channels] = rng.uniform(10.0, 30.0, size=n)
    return scale, [(c, round(float(scale[c]), 1)) for c in channels]


NORMS_BEFORE_MATRICES = ("input_layernorm", "post_attention_layernorm")


def scale_norm_channels(model, n: int, seed: int) -> list[tuple[int, float]]:
    """Scale the same ``n`` seeded channels of every RMSNorm feeding a block's matrices by
    10-30x in ``model`` (in memory) -> [(channel, factor)]. Real LLMs carry a few such
    persistent outlier input channels (LLM.int8, arXiv:2208.07339; massive activations,
    arXiv:2402.17762), which is what an importance matrix exploits; a tiny model trained
    for minutes grows none."""
    import mlx.core as mx

    norms = [m for p, m in model.named_modules() if p.endswith(NORMS_BEFORE_MATRICES)]
    scale, pairs = outlier_scale(norms[0].weight.shape[0], n, seed)
    for m in norms:
        m.weight = m.weight * mx.array(scale).astype(m.weight.dtype)
    return pairs


def pretrain_fixture(base: Path, out: Path, chats: list[dict], *, steps: int, seed: int = 0,
                     batch: int = 8, seq: int = 64, lr: float = 3e-3, text_lines: int = 2000,
                     outlier_channels: int = 0) -> Pretrained:
    """Train every parameter of the model folder ``base`` on ``chats`` and word-corpus text
    for ``steps`` AdamW steps (warmup, cosine decay) and save it as the model folder ``out``
    (a copy of ``base`` with the trained float32 weights). Deterministic for a ``seed``.
    ``outlier_channels``: that many input channels scaled up from the start
    (``scale_norm_channels``), so the model is trained with outlier activations."""
    import math
    import time
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm import load

    t0 = time.process_time()
    mx.random.seed(seed)
    model, _ = load(str(base))
    outliers = scale_norm_channels(model, outlier_channels, seed) if outlier_channels else []
    tokens = np.array(_stream(base, chats, text_lines, seed), dtype=np.int32)
    rng = np.random.default_rng(seed)
    held = tokens[-(8 * (seq + 1)):].reshape(8, seq + 1)  # the last windows: never trained on
    train = tokens[:-len(held.reshape(-1))]

    def loss_fn(m, x, y):
        return nn.losses.cross_entropy(m(x), y).mean()

    def held_loss() -> float:
        return float(loss_fn(model, mx.array(held[:, :-1]), mx.array(held[:, 1:])))

    before = held_loss()
    warm = max(1, steps // 20)
    schedule = optim.join_schedules([optim.linear_schedule(lr / warm, lr, warm),
                                     optim.cosine_decay(lr, steps - warm, lr / 20)], [warm])
    opt = optim.AdamW(learning_rate=schedule, weight_decay=0.01)
    value_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, opt.state]

    @partial(mx.compile, inputs=state, outputs=state)  # ~1.5x faster a step on CPU
    def step(x, y):
        loss, grads = value_and_grad(model, x, y)
        opt.update(model, grads)
        return loss

    for _ in range(steps):
        starts = rng.integers(0, len(train) - seq - 1, batch)
        win = mx.array(np.stack([train[s:s + seq + 1] for s in starts]))
        mx.eval(state, step(win[:, :-1], win[:, 1:]))
    after = held_loss()
    shutil.copytree(base, out)
    mx.save_safetensors(str(out / "model.safetensors"),
                        dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    vocab = int(json.loads((base / "config.json").read_text())["vocab_size"])
    return Pretrained(out, before, after, math.log(vocab), steps, time.process_time() - t0,
                      outliers)


def dequantized(path: Path, config: dict, shapes: dict[str, tuple]) -> dict:
    """The GGUF at ``path``'s tensors named in ``shapes`` (GGUF name -> HF shape),
    dequantized by gguf-py to float32 in the HF layout (llama's q/k rows un-permuted)."""
    import gguf
    import numpy as np

    from engine.export.architectures import PERMUTED_QK, arch_info

    heads = ({"attn_q": config["num_attention_heads"],
              "attn_k": config["num_key_value_heads"]}
             if arch_info(config).arch in PERMUTED_QK else {})  # qwen2's rows are as in HF
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if t.name not in shapes:
            continue
        w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shapes[t.name])
        n = heads.get(t.name.split(".")[-2])
        if n:  # the inverse of export.row_transforms.permute_rows
            w = w.reshape(n, w.shape[0] // n // 2, 2, -1).swapaxes(1, 2).reshape(w.shape)
        out[t.name] = w.astype(np.float32)
    return out


def layer_inputs(model, names: dict[str, str], token_lists: list[list[int]]) -> dict:
    """GGUF tensor name -> the inputs [tokens, cols] (float32 numpy) its matrix sees when
    ``model`` runs each of ``token_lists``; ``model`` is left as it was (the imatrix taps
    wrap its layers for the run and are taken off after)."""
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_unflatten

    from engine.export.imatrix import _tap_classes

    inputs: dict[str, list] = {}

    class Recorder:  # the taps' collector interface, keeping every input row
        def add_dense(self, name, x):
            inputs.setdefault(name, []).append(np.array(x.reshape(-1, x.shape[-1])))

    dense_tap, _ = _tap_classes()
    saved = {p: m for p, m in model.named_modules() if p in names}
    model.update_modules(tree_unflatten([(p, dense_tap(m, Recorder(), names[p]))
                                         for p, m in saved.items()]))
    try:
        for toks in token_lists:
            mx.eval(model(mx.array([toks])))
    finally:
        model.update_modules(tree_unflatten(list(saved.items())))
    return {n: np.concatenate(v).astype(np.float32) for n, v in inputs.items()}
