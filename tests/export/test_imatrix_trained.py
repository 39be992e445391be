"""On a fixture model trained from its random init (tests/export/trained_fixture.py), the
importance matrix computed over its training text, given to the export, lowers the true output
error of every quantized matrix on held-out text: ||(W - Q) X||^2 with X the inputs that
matrix sees there, not weighted by the matrix itself (which would be circular). The same
matrix with its columns shuffled does not: a matrix whose values sit on the wrong input columns
(a tensor kind tapped at the wrong place, a permuted layout) raises the error instead.
(The mean KL of such a tiny model is carried by a handful of positions and goes either way:
bench/imatrix_quality.py and bench/imatrix_ablation.py have the figures.)"""
from __future__ import annotations

import numpy as np
import pytest

from engine.events import ListReporter, as_job
from engine.export.gguf_export import export_gguf
from engine.export.imatrix import collect_imatrix, cut_chunks, gguf_names, in_float32

from .trained_fixture import dequantized, layer_inputs, pretrain_fixture, sums


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from engine.tiny_models import cached_tiny_model

    init = cached_tiny_model("llama3", hidden_size=256, intermediate_size=256,
                             num_hidden_layers=1, seed=0, embed_std=0.02)
    return pretrain_fixture(init, tmp_path_factory.mktemp("trained") / "base",
                            sums(1000, offset=5000), steps=40, seed=0, text_lines=300)


def _tokens(folder, chats) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return [list(tok.encode(tok.apply_chat_template(c["messages"], tokenize=False),
                            add_special_tokens=False)) for c in chats]


def _errors(path, config, floats, X) -> dict[str, float]:
    q = dequantized(path, config, {g: w.shape for g, w in floats.items()})
    return {g: float(((x @ (floats[g] - q[g]).T) ** 2).sum()) for g, x in X.items()}


@pytest.mark.parametrize("quant", ["q2_k", "q3_k_m"])
def test_matrix_over_training_text_lowers_every_matrix_held_out_error(trained, tmp_path, quant):
    from mlx.utils import tree_flatten

    from engine.models.load import load_model

    assert trained.loss_after < trained.uniform - 2.5  # it learned: far below a uniform guess
    model, _tok, config = load_model(trained.folder)
    in_float32(model)
    names = {p: g for p, g in gguf_names(model, config, str(trained.folder)).items()}
    params = dict(tree_flatten(model.parameters()))
    floats = {g: np.array(params[p + ".weight"], np.float64) for p, g in names.items()}
    X = {g: x.astype(np.float64) for g, x in layer_inputs(
        model, names, _tokens(trained.folder, sums(40, offset=20000))).items()}
    stream = [t for toks in _tokens(trained.folder, sums(300)) for t in toks]
    im = collect_imatrix(model, names, cut_chunks(stream, 128, None),
                         as_job("t", ListReporter(), None), datasets=[], ctx=128).weights()
    shuffled = {g: np.random.default_rng(0).permutation(w) for g, w in im.items()}
    errs = {}
    for label, matrix in (("plain", None), ("matrix", im), ("shuffled", shuffled)):
        out = tmp_path / f"{label}.gguf"
        export_gguf(trained.folder, out, quant, verify=False, imatrix=matrix)
        errs[label] = _errors(out, config, floats, X)
    assert sorted(errs["plain"]) == sorted(names.values())  # every blk matrix: 7 here
    for g in names.values():
        assert errs["matrix"][g] < errs["plain"][g], (g, errs["matrix"][g] / errs["plain"][g])
        assert errs["matrix"][g] < errs["shuffled"][g], g
    total = {k: sum(v.values()) for k, v in errs.items()}
    assert total["matrix"] < 0.95 * total["plain"], total
    assert total["shuffled"] > total["plain"], total
