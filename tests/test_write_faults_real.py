"""The same faults from the kernel itself, where the machine lets the test mount a small tmpfs
(root with mount rights, as in this project's CI; skipped elsewhere): a disk that fills during
training, and a read-only library. They pin that tests/faults.py injects what a real disk does.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.cli import main
from tests.conftest import snapshot_tree
from tests.faults import leftover_temporaries


@pytest.fixture
def small_disk(tmp_path):
    """``small_disk(kb)`` -> a freshly mounted tmpfs of that size (unmounted afterwards)."""
    mounted = []

    def make(kb: int) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _toy(tmp_path):
    from tests.train.conftest import write_toy_chat

    return write_toy_chat(tmp_path / "toy.jsonl", n=16)


def test_a_disk_that_fills_during_training(small_disk, tiny_model, tmp_path, monkeypatch,
                                           capsys):
    home = small_disk(64)  # the manifest fits, the first checkpoint (135 KB) does not
    monkeypatch.setenv("TAILOR_HOME", str(home))
    data = _toy(tmp_path)
    rc = main(["train", "--model", str(tiny_model("qwen2")), "--data", str(data), "--name",
               "full", "--iters", "2", "--batch-size", "2", "--eval-every", "0",
               "--save-every", "1", "--rank", "4"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    ckpts = home / "adapters" / "full" / "checkpoints"
    assert f"[train] FAILED: cannot write {ckpts / 'step-0000001'}: the disk is full (need " \
           f"135 KB, " in err
    assert f"free in {ckpts})" in err
    assert leftover_temporaries(home) == []


def test_a_read_only_library(small_disk, tiny_model, tmp_path, monkeypatch, capsys):
    from tests.export.adapters import make_library_adapter

    home = small_disk(2048)
    monkeypatch.setenv("TAILOR_HOME", str(home))
    make_library_adapter("base", tiny_model("qwen2"))
    (home / "locks").mkdir()
    (home / "locks" / "adapter-base.lock").touch()  # an earlier job's (lock files stay)
    (home / "locks" / "adapter-other.lock").touch()
    before = snapshot_tree(home)
    subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
    rc = main(["library", "rename", "base", "other"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert f"[library] FAILED: cannot rename {home / 'adapters' / 'base'}: " \
           f"{home / 'adapters'} is on a read-only file system" in err
    assert snapshot_tree(home) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_a_folder_without_write_permission(tiny_model, tmp_path, capsys):
    from tests.export.adapters import make_library_adapter

    make_library_adapter("base", tiny_model("qwen2"))
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        rc = main(["fuse", "--adapter", "base", "--out", str(out / "fused")])
        err = capsys.readouterr().err
        assert rc == 1 and "Traceback" not in err
        assert f"[fuse] FAILED: cannot write {out / 'fused'}: permission denied" in err
        assert list(out.iterdir()) == []
    finally:
        out.chmod(0o755)
