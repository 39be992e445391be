"""Sequence packing (--pack): packed rows train exactly as unpacked examples, on every fixture
family; a packed run resumes exactly; a family where packing is not exact is refused."""
from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from engine import library
from engine.events import Cancelled, CancelToken, Checkpoint, ListReporter, Log, TailorError
from engine.models import load_model
from engine.tiny_models import ALL_KINDS
from engine.train import checkpoint as ckpt
from engine.train.adapters import apply_adapters
from engine.train.batching import BatchStream, collate, collate_packed
from engine.train.config import make_config
from engine.train.loss import make_loss
from engine.train.packing import pack_rows, packing_problem, segment_caches
from engine.train.run import train_adapter
from tests.conftest import edited_copy, snapshot_tree

from .conftest import run_tailor, events_of, write_toy_chat


class _Example:
    def __init__(self, tokens, prompt: int):
        self.tokens = tokens
        self.loss_mask = [0] * prompt + [1] * (len(tokens) - prompt)


def _examples(vocab: int) -> list[_Example]:
    """Mixed lengths (5 to 61 tokens), mixed prompt lengths."""
    rng = np.random.default_rng(3)
    out = []
    for n, p in ((61, 20), (5, 2), (23, 10), (40, 1), (9, 6), (33, 30)):
        out.append(_Example(rng.integers(3, vocab, n).tolist(), p))
    return out


def _lora_model(model_dir):
    net, _, config = load_model(model_dir)
    mx.random.seed(0)
    apply_adapters(net, make_config(rank=4, dropout=0.0))
    # B starts at zero: give it values so the adapters take part in the comparison
    rng = np.random.default_rng(1)
    net.update(__import__("mlx.utils", fromlist=["x"]).tree_unflatten(
        [(k, mx.array(rng.normal(0, 0.05, v.shape).astype(np.float32)))
         for k, v in tree_flatten(net.trainable_parameters()) if k.endswith("lora_b")]))
    net.eval()
    return net, config


def _logits(net, inputs, segments=None):
    cache = segment_caches(net, segments) if segments is not None else None
    return net(inputs, cache=cache)


def _assert_each_example_as_alone(net, rows, packed, what: str) -> None:
    """Each example's logits in its packed row equal its logits alone, within 1e-5 of the
    logits' scale: RoPE at shifted absolute positions rounds differently in float32 (mlx's
    rope computes in float32 even for a float64 model); measured at most 6.2e-7 of the scale
    on the eight fixtures, 0 for the first example of a row."""
    logits = _logits(net, packed.inputs, packed.segments)
    for b, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.tokens) - 1
            alone = np.array(net(mx.array([e.tokens[:-1]]))[0])
            worst = np.abs(np.array(logits[b, at:at + n]) - alone).max()
            assert worst <= 1e-5 * max(1.0, np.abs(alone).max()), (what, b, at, worst)
            if at == 0:
                assert worst <= 1e-6, (what, b, worst)
            at += n


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_packed_rows_give_each_example_its_own_logits_loss_and_gradients(tiny_model, kind):
    net, config = _lora_model(tiny_model(kind))
    assert packing_problem(config) is None
    examples = _examples(int(config.get("vocab_size") or
                             config.get("text_config", {}).get("vocab_size")))
    rows = [[examples[0], examples[1], examples[2]], [examples[3], examples[4]], [examples[5]]]
    packed = collate_packed(rows, 128)
    assert packed.inputs.shape[0] == 3
    _assert_each_example_as_alone(net, rows, packed, kind)
    # loss and gradients: the packed batch against the same examples padded, unpacked
    loss = make_loss(net)
    grad_fn = nn.value_and_grad(net, loss)
    unpacked = collate(examples, 128)
    (l_u, n_u), g_u = grad_fn(net, unpacked.inputs, unpacked.targets, unpacked.index,
                              unpacked.weight)
    (l_p, n_p), g_p = grad_fn(net, packed.inputs, packed.targets, packed.index, packed.weight,
                              packed.segments)
    assert n_u.item() == n_p.item() == sum(sum(e.loss_mask[1:]) for e in examples)
    np.testing.assert_allclose(l_p.item(), l_u.item(), rtol=1e-6)
    flat_u, flat_p = dict(tree_flatten(g_u)), dict(tree_flatten(g_p))
    assert flat_u.keys() == flat_p.keys()
    for k in flat_u:
        np.testing.assert_allclose(np.array(flat_p[k]), np.array(flat_u[k]), atol=2e-6,
                                   rtol=1e-4, err_msg=f"{kind} {k}")


def test_a_sliding_window_applies_inside_each_example(tiny_model):
    """gemma3's local layers use a window; with a window of 8 (shorter than the examples) the
    packed row still matches each example alone, so the window never crosses a boundary."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        folder = edited_copy(tiny_model("gemma3"), Path(tmp) / "g3", config={"sliding_window": 8})
        net, config = _lora_model(folder)
        examples = _examples(config["vocab_size"])[:3]
        _assert_each_example_as_alone(net, [examples], collate_packed([examples], 128),
                                      "gemma3, window 8")
        # and the window is real: without it the long example's logits would differ
        assert net.args.sliding_window == 8


def test_pack_rows_fills_rows_up_to_the_length_and_keeps_every_example_once():
    lengths = [300, 20, 250, 60, 512, 100, 90, 5, 5, 400]
    rows = pack_rows(lengths, 512)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 512 for r in rows)
    assert len(rows) == 4  # 1742 tokens need at least 4 rows of 512
    assert pack_rows(lengths, 512) == rows  # deterministic


def _cfg(**kw):
    return make_config(**{**dict(iters=12, save_every=4, eval_every=4, learning_rate=2e-3,
                                 rank=4, batch_size=2, grad_accumulation=2, dropout=0.1,
                                 pack=True, max_seq_length=160), **kw})


def test_a_packed_run_logs_the_padding_saved_and_resumes_exactly(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=40)
    events = ListReporter()
    train_adapter(str(model_dir), data, "straight", _cfg(), report=events)
    note = [e.message for e in events.of(Log) if e.message.startswith("packing:")]
    assert note and "examples in" in note[0] and "padding per epoch" in note[0], note
    m = library.get_adapter("straight").manifest
    assert m["packing"]["rows"] < m["packing"]["examples"]
    assert m["packing"]["padding_packed"] < m["packing"]["padding_unpacked"]
    cancel = CancelToken()

    def stop_at_first_checkpoint(event):
        if isinstance(event, Checkpoint):
            cancel.cancel("test stop")

    with pytest.raises(Cancelled):
        train_adapter(str(model_dir), data, "resumed", _cfg(), report=stop_at_first_checkpoint,
                      cancel=cancel)
    train_adapter(None, None, "resumed", resume=True)
    a, b = (ckpt.latest_checkpoint(library.get_adapter(n).path) for n in ("straight", "resumed"))
    assert a.state["step"] == b.state["step"] == 12
    for k, v in a.weights.items():
        np.testing.assert_array_equal(np.array(v), np.array(b.weights[k]), err_msg=k)
    ha, hb = a.state["history"], b.state["history"]
    assert ha["train"] == hb["train"] and ha["valid"] == hb["valid"]


def test_packing_changes_the_layout_not_the_validation_loss(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=40)
    losses = {}
    for pack in (False, True):
        ev = ListReporter()
        train_adapter(str(tiny_model("llama3")), data, f"p{int(pack)}",
                      _cfg(pack=pack, iters=1, eval_every=0), report=ev)
        losses[pack] = [e.val_loss for e in ev.events if hasattr(e, "val_loss")][0]
    # the first validation runs on the untouched model: the same loss either way
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_a_family_with_absolute_positions_is_refused_before_loading(tiny_model, tmp_path):
    folder = edited_copy(tiny_model("qwen2"), tmp_path / "gpt2ish",
                         config={"model_type": "gpt2"})
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    before = snapshot_tree(folder)
    r = run_tailor("train", "--model", str(folder), "--data", str(data), "--name", "x",
                   "--pack", "--iters", "2", "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert failed["message"].startswith(f"--pack is not available for {folder}: gpt2 adds "
                                        "absolute position embeddings")
    assert "--no-pack" in failed["hint"]
    assert "Traceback" not in r.stderr
    assert snapshot_tree(folder) == before
    with pytest.raises(TailorError, match="not among them"):
        from engine.train.packing import refuse_unpackable
        refuse_unpackable({"model_type": "mamba"}, "m")


def test_the_stream_packs_rows_and_counts_them_as_batch_units(tiny_model):
    ex = [_Example(list(range(3, 3 + n)), 1) for n in (50, 10, 30, 20, 40, 45)]
    plain = BatchStream(ex, 2, 64, 0)
    packed = BatchStream(ex, 2, 64, 0, pack=True)
    assert plain.n_units == 6 and packed.n_units == len(packed.rows) < 6
    b = packed.batch(0)
    assert b.segments is not None and b.inputs.shape[1] <= 64
    pad_plain, _ = plain.padding()
    pad_packed, _ = packed.padding()
    assert pad_packed <= pad_plain
