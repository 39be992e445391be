"""Issue 20: what a merge refuses, before anything is written (the library byte for byte as
it was), and a cancelled merge leaves nothing behind."""
from __future__ import annotations

import pytest

from engine.events import Cancelled, CancelToken, ErrorCode, Progress, TailorError
from engine.merge import MergeConfig, merge_adapters
from engine.merge.plan import DORA_REASON
from tests.conftest import edited_copy, snapshot_tree

from .helpers import ATTN, make_lora


@pytest.fixture
def library(tiny_model, tailor_home):
    base = tiny_model("llama3")
    make_lora("a", base, seed=1)
    make_lora("b", base, seed=2, rank=8)
    return tailor_home / "adapters"


def _refused(library, names, match, cfg=None, name="new", fuse=None, code=None):
    before = snapshot_tree(library.parent)
    with pytest.raises(TailorError, match=match) as e:
        merge_adapters(names, cfg or MergeConfig(), name, fuse)
    assert snapshot_tree(library.parent) == before  # nothing written, nothing changed
    if code is not None:
        assert e.value.code == code
    return e.value


def test_different_bases_are_refused(library, tiny_model, tmp_path):
    # the same architecture with its config changed: a different base by its fingerprint
    other = edited_copy(tiny_model("llama3"), tmp_path / "other-base",
                        config={"rms_norm_eps": 1e-6})
    make_lora("c", other, seed=3)
    e = _refused(library, ["a", "c"], "were trained on different base models")
    assert "other-base" in e.message and "share a base model" in e.hint


def test_an_older_record_without_the_base_hash_is_checked_by_the_folder(library, tiny_model,
                                                                        tmp_path):
    other = edited_copy(tiny_model("llama3"), tmp_path / "other-base",
                        config={"rms_norm_eps": 1e-6})
    make_lora("c", other, seed=3, record_sha=False)
    _refused(library, ["a", "c"], "different base models")
    make_lora("d", tiny_model("llama3"), seed=4, record_sha=False)  # the same folder: merges
    assert merge_adapters(["a", "d"], MergeConfig(), "ad").rank == 8


def test_a_missing_parent_is_refused_naming_the_library(library):
    e = _refused(library, ["a", "nope"], "no adapter named 'nope'")
    assert "a, b" in e.hint


def test_a_taken_name_is_refused(library):
    _refused(library, ["a", "b"], "an adapter named 'b' already exists", name="b",
             code=ErrorCode.NAME_TAKEN)


def test_an_existing_fuse_folder_is_refused(library, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    _refused(library, ["a", "b"], "already exists", name="", fuse=tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_dora_into_an_adapter_is_refused_with_the_reason(library, tiny_model):
    make_lora("d", tiny_model("llama3"), dora=True, keys=ATTN)
    e = _refused(library, ["a", "d"], "DoRA adapter")
    assert DORA_REASON in e.message and "magnitude" in e.message and "--fuse" in e.hint


@pytest.mark.parametrize("names, cfg, match", [
    (["a"], MergeConfig(), "at least two adapters"),
    (["a", "a"], MergeConfig(), "named twice"),
    (["a", "b"], MergeConfig(weights=[1.0]), "1 weights for 2 adapters"),
    (["a", "b"], MergeConfig(weights=[0.0, 0.0]), "every weight is 0"),
    (["a", "b"], MergeConfig(method="ties", density=0.0), "density must be above 0"),
    (["a", "b"], MergeConfig(method="slerp"), "is not one of concat, linear, ties, dare"),
])
def test_bad_settings_are_refused(library, names, cfg, match):
    _refused(library, names, match, cfg=cfg)


def test_a_bad_new_name_is_refused(library):
    _refused(library, ["a", "b"], "contains a path separator", name="../x")


@pytest.mark.parametrize("method, fuse", [("ties", False), ("concat", False), ("dare", True)])
def test_cancel_mid_merge_leaves_nothing_behind(library, tmp_path, method, fuse):
    before = snapshot_tree(library.parent)
    cancel = CancelToken()
    seen = []

    def report(event):
        if isinstance(event, Progress) and "merging" in event.message:
            seen.append(event)
            if len(seen) == 2:  # the second layer
                cancel.cancel("stop requested")

    out = tmp_path / "fused" if fuse else None
    with pytest.raises(Cancelled):
        merge_adapters(["a", "b"], MergeConfig(method=method), "" if fuse else "new", out,
                       report=report, cancel=cancel)
    assert snapshot_tree(library.parent) == before
    if fuse:  # neither the folder nor its temporary
        assert sorted(p.name for p in tmp_path.iterdir()) == ["tailor-home"]
    assert not any(p.name.startswith(".") for p in library.iterdir())


def test_what_a_killed_merge_left_is_removed_by_the_next_one(library):
    leftover = library / ".new.tmp-0123abcd"  # a merge into "new" killed while writing
    leftover.mkdir()
    (leftover / "adapters.safetensors").write_bytes(b"half")
    merge_adapters(["a", "b"], MergeConfig(), "new")
    assert not leftover.exists() and (library / "new" / "adapters.safetensors").exists()
