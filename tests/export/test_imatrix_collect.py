"""The importance matrix collected in MLX (engine/export/imatrix.py) against hand
computations in numpy: llama-imatrix's sums of squared inputs and token counts, per expert
for stacked experts (only the tokens routed to each), named by the exporter's GGUF names."""
from __future__ import annotations

import numpy as np
import pytest

from engine.events import CancelToken, Cancelled, ListReporter, as_job
from engine.export.imatrix import MIN_CHUNK_TOKENS, collect_imatrix, cut_chunks, gguf_names


def _load(folder):
    from engine.models.load import load_model

    model, _tok, config = load_model(folder)
    return model, config


def _chunks(lengths, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(3, vocab, n)] for n in lengths]


def test_names_are_every_blk_matrix_of_the_exported_file(tiny_model):
    """The tapped matrices are exactly the file's blk.* matrices (llama-imatrix collects
    those and neither output.weight nor the token embedding), by the exporter's names."""
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.write import plan_tensors
    from engine.models.load import read_config

    for kind in ("llama3", "qwen3_moe", "phi3"):
        folder = tiny_model(kind)
        model, config = _load(folder)
        names = gguf_names(model, config, str(folder))
        planned = plan_tensors(arch_info(read_config(folder)), list_tensors(folder), "q4_k_m")
        want = {p.name for p in planned if p.name.startswith("blk.") and len(p.shape) >= 2}
        assert set(names.values()) == want, kind
        assert "output.weight" not in names.values()
        assert "token_embd.weight" not in names.values()


def test_dense_sums_equal_a_numpy_forward_of_layer_0(tiny_model):
    """blk.0.attn_q/k/v's sums are the sums over every token of the squared RMS-normed
    embeddings (numpy, from the checkpoint's own tensors); counts are the tokens."""
    folder = tiny_model("llama3")
    model, config = _load(folder)
    chunks = _chunks([40, 24], config["vocab_size"])
    im = collect_imatrix(model, gguf_names(model, config, str(folder)), chunks,
                         as_job("t", ListReporter(), None), datasets=["random"], ctx=40)
    embed = np.array(model.model.embed_tokens.weight, dtype=np.float64)
    norm = np.array(model.model.layers[0].input_layernorm.weight, dtype=np.float64)
    eps = float(config["rms_norm_eps"])
    want = np.zeros(embed.shape[1])
    for chunk in chunks:
        h = embed[chunk]
        x = h / np.sqrt((h * h).mean(axis=1, keepdims=True) + eps) * norm
        want += (x * x).sum(axis=0)
    for name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"):
        np.testing.assert_allclose(im.sums[name], want, rtol=2e-5)
        assert im.counts[name].tolist() == [64.0]
    assert im.chunk_count == 2 and im.chunk_size == 40 and im.datasets == ["random"]
    # every matrix saw every token once: one count per plain matrix
    assert {tuple(c) for c in im.counts.values()} == {(64.0,)}


def _record_moe_inputs(model):
    """Layer 0's MoE block records its input rows (a subclass swap: the module tree and its
    names stay as they are)."""
    block = model.model.layers[0].mlp
    seen = []

    class Recording(type(block)):
        def __call__(self, x):
            seen.append(np.array(x, dtype=np.float64).reshape(-1, x.shape[-1]))
            return super().__call__(x)

    block.__class__ = Recording
    return block, seen


def _silu(x):
    return x / (1 + np.exp(-x))


def test_expert_sums_and_counts_cover_only_the_tokens_routed_to_each(tiny_model):
    """Qwen3-MoE: per expert, gate/up sum the squared block inputs of the tokens routed to
    it, down the squared SwiGLU activations of that expert; counts are the routed tokens.
    The 40-token chunk takes mlx-lm's sorted path (>= 64 pairs), the 20-token one the plain
    one; the router (ffn_gate_inp) is a plain matrix over every token."""
    folder = tiny_model("qwen3_moe")
    model, config = _load(folder)
    block, seen = _record_moe_inputs(model)
    chunks = _chunks([40, 20], config["vocab_size"], seed=1)
    im = collect_imatrix(model, gguf_names(model, config, str(folder)), chunks,
                         as_job("t", ListReporter(), None), datasets=["random"], ctx=40)
    x = np.concatenate(seen)
    router = np.array(block.gate.weight, dtype=np.float64)
    gate_w = np.array(block.switch_mlp.gate_proj.weight, dtype=np.float64)
    up_w = np.array(block.switch_mlp.up_proj.weight, dtype=np.float64)
    k, n_expert = int(config["num_experts_per_tok"]), int(config["num_experts"])
    chosen = np.argsort(-(x @ router.T), axis=1)[:, :k]  # softmax keeps the order
    sums = {p: np.zeros((n_expert, w.shape[-1]))
            for p, w in (("gate", gate_w), ("up", gate_w), ("down", gate_w.swapaxes(1, 2)))}
    counts = np.zeros(n_expert)
    for t in range(len(x)):
        for e in chosen[t]:
            act = _silu(gate_w[e] @ x[t]) * (up_w[e] @ x[t])
            sums["gate"][e] += x[t] ** 2
            sums["up"][e] += x[t] ** 2
            sums["down"][e] += act ** 2
            counts[e] += 1
    assert counts.sum() == k * 60 and (counts > 0).sum() > 1
    for proj in ("gate", "up", "down"):
        name = f"blk.0.ffn_{proj}_exps.weight"
        assert im.counts[name].tolist() == counts.tolist(), name
        np.testing.assert_allclose(im.sums[name].reshape(n_expert, -1), sums[proj],
                                   rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(im.sums["blk.0.ffn_gate_inp.weight"], (x * x).sum(axis=0),
                               rtol=2e-5)
    assert im.counts["blk.0.ffn_gate_inp.weight"].tolist() == [60.0]
    weights = im.weights()["blk.0.ffn_up_exps.weight"]
    assert weights.shape == (n_expert, x.shape[1]) and weights.dtype == np.float32
    unused = counts == 0  # llama-quantize's weight for an expert no token reached: 1
    assert np.all(weights[unused] == 1.0)


def test_chunks_start_with_bos_and_drop_a_tail_too_short_to_count():
    tokens = list(range(100, 100 + 2 * 32 + MIN_CHUNK_TOKENS - 1))
    chunks = cut_chunks(tokens, 32, bos_id=1)
    assert [len(c) for c in chunks] == [32, 32]
    assert [c[0] for c in chunks] == [1, 1] and chunks[1][1:] == tokens[33:64]
    assert [len(c) for c in cut_chunks(tokens + [7], 32, None)] == [32, 32, 16]
    assert len(cut_chunks(tokens, 32, None, max_chunks=1)) == 1


def test_progress_per_chunk_and_cancel_between_chunks(tiny_model):
    folder = tiny_model("llama3")
    model, config = _load(folder)
    names = gguf_names(model, config, str(folder))
    rep = ListReporter()
    collect_imatrix(model, names, _chunks([20, 20, 20], config["vocab_size"]),
                    as_job("t", rep, None), datasets=[], ctx=20)
    messages = [e.message for e in rep.events if getattr(e, "stage", "") == "imatrix"]
    assert messages[-3:] == [f"importance matrix: chunk {i}/3" for i in (1, 2, 3)]
    model, config = _load(folder)
    cancel = CancelToken()
    cancel.cancel()
    with pytest.raises(Cancelled):
        collect_imatrix(model, names, _chunks([20], config["vocab_size"]),
                        as_job("t", ListReporter(), cancel), datasets=[], ctx=20)
