"""Issue 20: each merge method against a reference written out plainly here: concat and linear
on model logits, TIES and DARE on random changes and through a fused merge."""
from __future__ import annotations

import json
import zlib

import mlx.core as mx
import numpy as np
import pytest

from engine.merge import MergeConfig, merge_adapters
from engine.merge import deltas as D

from .helpers import (ATTN, MLP, add_changes, logits, logits_with_changes, lora_changes,
                      make_lora, max_rel)


@pytest.fixture
def two(tiny_model):
    """Two adapters of one base that differ in rank, scale (as an rsLoRA run records it),
    targets and layers: "a" rank 4, scale 2, q/v in both blocks; "b" rank 8, scale 0.5,
    q/down/up in the last block only."""
    base = tiny_model("llama3")
    a = make_lora("a", base, rank=4, scale=2.0, keys=ATTN, seed=1)
    b = make_lora("b", base, rank=8, scale=0.5, keys=MLP, num_layers=1, seed=2, std=0.2)
    return base, a, b


def test_concat_with_weights_1_0_reproduces_the_first_adapter_exactly(two, tailor_home):
    base, a, _ = two
    result = merge_adapters(["a", "b"], MergeConfig(method="concat", weights=[1.0, 0.0]), "c")
    assert result.exact and result.rank == 4  # a weight of 0 adds nothing to the factors
    merged = tailor_home / "adapters" / "c"
    for got, want in zip(logits(base, merged), logits(base, a)):
        np.testing.assert_array_equal(got, want)


def test_concat_equals_applying_both_changes(two, tailor_home):
    base, a, b = two
    result = merge_adapters(["a", "b"], MergeConfig(method="concat", weights=[0.7, -0.4]), "c")
    assert result.rank == 12 and result.exact
    config = json.loads((tailor_home / "adapters/c/adapter_config.json").read_text())
    # every module either parent adapts, in every block either covers
    assert sorted(config["lora_parameters"]["keys"]) == sorted(set(ATTN) | set(MLP))
    assert config["num_layers"] == 2 and config["lora_parameters"]["rank"] == 12
    want = logits_with_changes(base, add_changes((0.7, lora_changes(a)),
                                                 (-0.4, lora_changes(b))))
    got = logits(base, tailor_home / "adapters" / "c")
    assert max_rel(got, want) < 1e-5
    assert max_rel(logits(base), want) > 1e-3  # the merge really changes the model


def test_linear_at_full_rank_equals_concat_and_reports_the_energy_kept(two, tailor_home):
    base, _, _ = two
    merge_adapters(["a", "b"], MergeConfig(method="concat", weights=[0.6, 0.8]), "c")
    full = merge_adapters(["a", "b"], MergeConfig(method="linear", weights=[0.6, 0.8],
                                                  rank=12), "lin12")
    assert min(full.energy_kept.values()) == pytest.approx(1.0, abs=1e-6)
    assert max_rel(logits(base, tailor_home / "adapters/lin12"),
                   logits(base, tailor_home / "adapters/c")) < 1e-5
    low = merge_adapters(["a", "b"], MergeConfig(method="linear", weights=[0.6, 0.8],
                                                 rank=2), "lin2")
    # the energy kept, against the SVD of the dense sum computed here
    changes = add_changes((0.6, lora_changes(two[1])), (0.8, lora_changes(two[2])))
    for module, kept in low.energy_kept.items():
        if module not in changes:  # a module neither parent adapts in this block: nothing lost
            assert kept == 1.0
            continue
        s = np.linalg.svd(changes[module], compute_uv=False)
        assert kept == pytest.approx(np.sum(s[:2] ** 2) / np.sum(s ** 2), abs=1e-5), module
    assert not low.exact and low.min_energy_kept < 0.99
    record = json.loads((tailor_home / "adapters/lin2/manifest.json").read_text())
    assert record["merge"]["energy_kept"] == low.energy_kept
    assert [p["name"] for p in record["merge"]["parents"]] == ["a", "b"]
    assert [p["weight"] for p in record["merge"]["parents"]] == [0.6, 0.8]


def reference_ties(changes, weights, density):
    """TIES as written in the paper and mergekit, one entry at a time."""
    trimmed = []
    for d in changes:
        k = int(density * d.size)
        keep = np.argsort(-np.abs(d).ravel())[:k]
        t = np.zeros(d.size)
        t[keep] = d.ravel()[keep]
        trimmed.append(t.reshape(d.shape))
    out = np.zeros(changes[0].shape)
    for idx in np.ndindex(out.shape):
        values = [w * t[idx] for w, t in zip(weights, trimmed)]
        sign = 1.0 if sum(values) >= 0 else -1.0
        agree = [(v, w) for v, w in zip(values, weights) if np.sign(v) == sign]
        if agree:
            divisor = sum(w for _, w in agree)
            out[idx] = sum(v for v, _ in agree) / (divisor if divisor != 0 else 1.0)
    return out


def reference_dare(changes, weights, density, combine, seed, layer):
    """DARE: the documented mask (a generator seeded by seed, parent index, crc32 of the
    layer), rescale by 1/density, weight; sum, or elect signs and add the agreeing entries."""
    dropped = []
    for i, (d, w) in enumerate(zip(changes, weights)):
        rng = np.random.default_rng([seed, i, zlib.crc32(layer.encode())])
        keep = rng.random(d.shape, dtype=np.float32) < np.float32(density)
        dropped.append(w * np.where(keep, d / density, 0.0))
    if combine == "sum":
        return sum(dropped)
    out = np.zeros(changes[0].shape)
    for idx in np.ndindex(out.shape):
        values = [t[idx] for t in dropped]
        sign = 1.0 if sum(values) >= 0 else -1.0
        out[idx] = sum(v for v in values if np.sign(v) == sign)
    return out


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("weights", [[1.0, 1.0], [0.7, 0.3], [1.0, 0.5, -0.25]])
@pytest.mark.parametrize("shape", [(12, 10), (D.CHUNK_ROWS * 2 + 37, 6)])  # several chunks
def test_ties_matches_the_reference_on_random_changes(density, weights, shape):
    rng = np.random.default_rng(7)
    changes = [rng.normal(size=shape).astype(np.float32) for _ in weights]
    want = reference_ties([c.astype(np.float64) for c in changes], weights, density)
    got = D.ties_merge([c.copy() for c in changes], weights, density)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("combine", ["sum", "ties"])
@pytest.mark.parametrize("density", [0.3, 0.9])
@pytest.mark.parametrize("shape", [(9, 14), (D.CHUNK_ROWS + 5, 7)])  # drawn in two chunks
def test_dare_matches_the_reference_on_random_changes(combine, density, shape):
    rng = np.random.default_rng(3)
    changes = [rng.normal(size=shape).astype(np.float32) for _ in range(3)]
    weights = [0.5, 1.0, 0.8]
    want = reference_dare([c.astype(np.float64) for c in changes], weights, density, combine,
                          11, "model.layers.0.mlp.down_proj")
    got = D.dare_merge([c.copy() for c in changes], weights, density, combine, 11,
                       "model.layers.0.mlp.down_proj")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    again = D.dare_merge([c.copy() for c in changes], weights, density, combine, 11,
                         "model.layers.0.mlp.down_proj")
    np.testing.assert_array_equal(got, again)  # seeded: the same merge twice
    other = D.dare_merge([c.copy() for c in changes], weights, density, combine, 12,
                         "model.layers.0.mlp.down_proj")
    assert not np.array_equal(got, other)


def _fused_changes(base, folder):
    """module -> fused weight - base weight, for the adapted modules."""
    import mlx_lm
    from mlx.utils import tree_flatten

    want = dict(tree_flatten(mlx_lm.load(str(base))[0].parameters()))
    got = dict(tree_flatten(mlx_lm.load(str(folder))[0].parameters()))
    return {k[:-len(".weight")]: np.array(got[k], np.float64) - np.array(want[k], np.float64)
            for k in got if not np.array_equal(np.array(got[k]), np.array(want[k]))}


@pytest.mark.parametrize("method, settings", [
    ("ties", {"density": 0.3}),
    ("dare", {"density": 0.6, "seed": 5, "dare_combine": "ties"}),
])
def test_ties_and_dare_fused_are_the_reference_merge_of_the_adapters(two, tmp_path, method,
                                                                    settings):
    base, a, b = two
    weights = [0.9, 0.6]
    cfg = MergeConfig(method=method, weights=weights, **settings)
    result = merge_adapters(["a", "b"], cfg, "", tmp_path / "fused")
    assert result.exact and result.fused_path == str(tmp_path / "fused")
    ca, cb = lora_changes(a), lora_changes(b)
    got = _fused_changes(base, tmp_path / "fused")
    assert set(got) <= set(ca) | set(cb)
    for module in sorted(set(ca) | set(cb)):
        shape = (ca.get(module) if module in ca else cb[module]).shape
        parts = [c.get(module, np.zeros(shape)) for c in (ca, cb)]
        if method == "ties":
            want = reference_ties(parts, weights, 0.3)
        else:
            want = reference_dare(parts, weights, 0.6, "ties", 5, module)
        have = got.get(module, np.zeros(shape))
        assert np.max(np.abs(have - want)) <= 1e-5 * np.max(np.abs(want)) + 1e-7, module
    # stored as an adapter instead: its best rank-R part, with the energy kept reported
    adapter = merge_adapters(["a", "b"], cfg, "as-adapter")
    assert not adapter.exact and 0 < adapter.min_energy_kept < 1
    assert adapter.rank == 8  # the largest parent's rank by default


def test_ties_adapter_at_full_rank_is_the_fused_merge(two, tmp_path, tailor_home):
    base, _, _ = two
    cfg = dict(method="ties", weights=[1.0, 1.0], density=0.5)
    merge_adapters(["a", "b"], MergeConfig(**cfg), "", tmp_path / "fused")
    full = merge_adapters(["a", "b"], MergeConfig(**cfg, rank=64), "ties64")
    assert full.min_energy_kept == pytest.approx(1.0, abs=1e-6)
    assert max_rel(logits(base, tailor_home / "adapters/ties64"),
                   logits(tmp_path / "fused")) < 1e-5


@pytest.mark.parametrize("shape", [(40, 24), (24, 40)])
def test_a_full_change_stored_as_an_adapter_is_its_best_rank_r_part(shape):
    rng = np.random.default_rng(5)
    change = rng.normal(size=shape).astype(np.float32)
    u, s, vt = np.linalg.svd(change.astype(np.float64))
    best = (u[:, :6] * s[:6]) @ vt[:6]  # Eckart-Young: the truncated SVD
    a, b, kept = D.low_rank_from_dense(change.copy(), 6)
    assert a.shape == (shape[1], 6) and b.shape == (6, shape[0])
    np.testing.assert_allclose((a @ b).T, best, atol=1e-5)
    assert kept == pytest.approx(np.sum(s[:6] ** 2) / np.sum(s ** 2), abs=1e-6)
    a, b, kept = D.low_rank_from_dense(change.copy(), 30)  # above its rank: zero-padded, exact
    assert a.shape[1] == 30 and kept == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose((a @ b).T, change, atol=1e-5)


@pytest.mark.parametrize("method", ["concat", "ties"])
def test_dora_parents_fused_merge_their_exact_changes(tiny_model, tmp_path, method):
    """A DoRA adapter's change is its fused weight minus the base's (full rank, depends on
    W): with --fuse the merge takes exactly that, as mergekit does from fused models."""
    import mlx_lm
    from mlx.utils import tree_flatten

    from engine.fuse import fuse_adapter

    base = tiny_model("llama3")
    make_lora("lo", base, keys=ATTN, seed=1)
    make_lora("do", base, keys=MLP, seed=2, dora=True, std=0.2)
    weights = [0.8, 1.2]
    result = merge_adapters(["lo", "do"], MergeConfig(method=method, weights=weights,
                                                      density=0.4), "", tmp_path / "m")
    assert result.exact

    def params(folder):
        return {k: np.array(v, np.float64)
                for k, v in tree_flatten(mlx_lm.load(str(folder))[0].parameters())}

    w = params(base)
    lo, do = params(fuse_adapter("lo", tmp_path / "lo")), params(fuse_adapter("do", tmp_path / "do"))
    got = params(tmp_path / "m")
    for key in w:
        parts = [lo[key] - w[key], do[key] - w[key]]  # each adapter's task vector
        if method == "concat":
            want = w[key] + weights[0] * parts[0] + weights[1] * parts[1]
        else:
            want = w[key] + (reference_ties(parts, weights, 0.4) if parts[0].ndim == 2
                             and (parts[0].any() or parts[1].any()) else 0)
        scale = max(np.max(np.abs(want - w[key])), 1e-6)
        assert np.max(np.abs(got[key] - want)) <= 2e-5 * scale + 1e-6, key
