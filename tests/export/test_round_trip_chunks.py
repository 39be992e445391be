"""The quantized check's round trip runs in bounded row chunks (its float32 working copies are
a chunk, not a whole tensor) and gives exactly the values of the whole tensor encoded at once."""
from functools import partial

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

from engine.export import mixtures, verify

CHUNK = 256 * 16  # 16 rows of 256 columns


def whole_tensor(w, t, importance=None):
    """The tensor encoded in one call ([experts, cols] importance for a stack) and decoded."""
    flat = np.ascontiguousarray(w.reshape(-1, w.shape[-1]), np.float32)
    data = np.asarray(mixtures.encode(flat, t, weights=importance)).view(np.uint8)
    return quants.dequantize(data.reshape(flat.shape[0], -1), t).reshape(w.shape)


@pytest.fixture
def encoded_rows(monkeypatch):
    """Small chunks, and the rows each encoder call got."""
    monkeypatch.setattr(verify, "ROUND_CHUNK_VALUES", CHUNK)
    seen, encode = [], mixtures.encode

    def spy(w, t, **kw):
        seen.append(w.shape[0])
        return encode(w, t, **kw)

    monkeypatch.setattr(mixtures, "encode", spy)
    return seen


@pytest.mark.parametrize("t", [T.Q4_K, T.Q2_K, T.Q8_0, T.IQ4_NL])
@pytest.mark.parametrize("stacked", [False, True], ids=["matrix", "experts"])
@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "imatrix"])
def test_chunked_round_trip_equals_the_whole_tensor(encoded_rows, t, stacked, weighted):
    rng = np.random.default_rng(int(t) + 2 * stacked + weighted)
    shape = (3, 40, 256) if stacked else (100, 256)
    w = rng.standard_normal(shape).astype(np.float16)
    imx = None
    if weighted:  # one importance row per expert of a stack
        imx = rng.uniform(0.1, 4, (3, 256) if stacked else 256).astype(np.float32)
    want = whole_tensor(w, t, imx)
    encoded_rows.clear()
    got = verify.round_trip(w, t, imx)
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert max(encoded_rows) <= CHUNK // 256 and len(encoded_rows) >= 7  # several chunks
    assert sum(encoded_rows) == w.size // 256
    # in place, in the source dtype: the whole-tensor values cast once
    verify.round_trip(w, t, imx, out=w)
    assert np.array_equal(w, want.astype(np.float16))


def test_apply_rounding_keeps_float16_without_a_float32_copy(encoded_rows):
    rng = np.random.default_rng(7)
    embed = rng.standard_normal((70, 256)).astype(np.float16)
    experts = rng.standard_normal((2, 24, 256)).astype(np.float16)  # fused gate_up
    imx = rng.uniform(0.1, 4, (2, 256)).astype(np.float32)
    weights = {"embed": mx.array(embed), "experts": mx.array(experts)}
    recipes = {"embed": [partial(verify._round_whole, ggml_type=T.Q4_K, importance=None)],
               "experts": [partial(verify._round_rows, lo=0, hi=12, ggml_type=T.Q4_K,
                                   importance=imx),
                           partial(verify._round_rows, lo=12, hi=24, ggml_type=T.Q6_K,
                                   importance=imx)]}
    assert verify.apply_rounding(weights, recipes) == {"embed": 0, "experts": 0}
    assert max(encoded_rows) <= CHUNK // 256
    assert weights["embed"].dtype == mx.float16 and weights["experts"].dtype == mx.float16
    want = np.concatenate([whole_tensor(experts[:, :12], T.Q4_K, imx),
                           whole_tensor(experts[:, 12:], T.Q6_K, imx)], axis=1)
    assert np.array_equal(np.array(weights["experts"]), want.astype(np.float16))
    assert np.array_equal(np.array(weights["embed"]),
                          whole_tensor(embed, T.Q4_K).astype(np.float16))


def test_a_stacked_checkpoint_tensor_rounds_each_expert_with_its_own_importance_row():
    """Granite's output_linear [n_expert, rows, cols] is one checkpoint tensor: the export
    encodes expert e with importance row e (write.py), so the reference must too."""
    from pathlib import Path
    from types import SimpleNamespace

    from engine.export.safetensors_stream import TensorRef

    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 8, 256)).astype(np.float32)
    imx = rng.uniform(0.01, 9, (3, 256)).astype(np.float32)
    ref = TensorRef("experts.down", Path("model.safetensors"), "F32", w.shape, 0, w.nbytes)
    recipes, derived = verify.rounding_recipes(
        [SimpleNamespace(ref=ref, ggml_type=T.Q4_K, importance=imx)])
    weights = {"experts.down": mx.array(w)}
    assert derived == 0 and verify.apply_rounding(weights, recipes) == {"experts.down": 0}
    assert np.array_equal(np.array(weights["experts.down"]), whole_tensor(w, T.Q4_K, imx))
