"""Our MLX importance matrix against llama.cpp's: the same tiny model as an F32 GGUF, run by
llama.cpp over the same chunks with llama-imatrix's collector in its scheduler callback
(tests/export/imatrix_oracle.py). Same tensor names, the same token counts per matrix and
per expert, the same sums to float32 rounding of two different forward passes."""
from __future__ import annotations

import numpy as np
import pytest

from engine.events import ListReporter, as_job
from engine.export.gguf_export import export_gguf
from engine.export.imatrix import collect_imatrix, gguf_names

from .imatrix_oracle import llama_cpp_imatrix


# seed 1: random tokens whose routing no near-tie splits between MLX and llama.cpp (seed 0
# has one token whose two best experts in layer 0 differ by float rounding, so one count
# moves to the neighbouring expert there)
# (every family's fixture matched when checked by hand; these cover each path: plain, fused
# qkv, gemma's norms and embedding scale, MoE under mlx-lm's three layouts, gpt-oss's biased
# experts and sinks, Gemma 4's per-layer-type sizes)
@pytest.mark.parametrize("kind", ["llama3", "phi3", "gemma3", "olmo2", "qwen3_moe", "mixtral",
                                  "granitemoe", "gpt_oss", "gemma4"])
def test_mlx_matrix_equals_llama_imatrix_in_llama_cpp(tiny_model, tmp_path, kind):
    from engine.models.load import load_model

    folder = tiny_model(kind)
    gguf = tmp_path / "m.gguf"
    export_gguf(folder, gguf, "f32", verify=False)
    rng = np.random.default_rng(1)
    chunks = [[int(t) for t in rng.integers(3, 300, n)] for n in (40, 24)]
    want_sums, want_counts = llama_cpp_imatrix(gguf, chunks)
    model, _tok, config = load_model(folder)
    im = collect_imatrix(model, gguf_names(model, config, str(folder)), chunks,
                         as_job("t", ListReporter(), None), datasets=[], ctx=40)
    assert sorted(im.sums) == sorted(want_sums)
    for name, want in want_sums.items():
        assert im.counts[name].tolist() == want_counts[name].tolist(), name
        got = im.sums[name].reshape(want.shape)
        assert np.abs(got - want).max() <= 2e-3 * np.abs(want).max(), name


def test_families_whose_columns_move_on_the_way_to_gguf_are_refused(tiny_model):
    from engine.events import TailorError
    from engine.models.load import load_model

    folder = tiny_model("qwen3_5")
    model, _tok, config = load_model(folder)
    with pytest.raises(TailorError) as e:
        gguf_names(model, config, str(folder))
    assert "cannot be computed for this qwen3_5 model yet" in e.value.message
    assert "--imatrix FILE" in e.value.hint
