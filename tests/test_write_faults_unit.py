"""The write-fault translator in engine/atomic.py and the byte-size wording (issue 11: raw
OSError/RuntimeError tracebacks on a full disk or a read-only folder; "need 0.00 GB, 0.00 GB
free" for small files)."""
from __future__ import annotations

import errno
import os
import sys
import types

import pytest

from engine.atomic import (WriteFailed, atomic_path, check_free_space, diagnose_native_failure,
                           save_safetensors, translate_write_faults)
from engine.sizes import format_bytes


@pytest.mark.parametrize("n, text", [(0, "0 B"), (999, "999 B"), (1000, "1.00 KB"),
                                     (2048, "2.05 KB"), (45_600, "45.6 KB"),
                                     (999_999, "1.00 MB"), (4_560_000, "4.56 MB"),
                                     (123_400_000, "123 MB"), (1.5e9, "1.50 GB"),
                                     (2.5e12, "2.50 TB"), (-1500, "-1.50 KB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text


def test_free_space_precheck_shows_small_sizes_in_their_unit(tmp_path):
    with pytest.raises(WriteFailed) as e:
        check_free_space(tmp_path, 2_000, what="the manifest", free_bytes_fn=lambda p: 500)
    assert f"in {tmp_path} for the manifest: need 2.00 KB, 500 B free" in e.value.message
    assert "0.00 GB" not in str(e.value)


def test_a_full_disk_mid_write_names_the_target_and_the_sizes(tmp_path):
    import mlx.core as mx

    target = tmp_path / "adapters.safetensors"
    with pytest.raises(WriteFailed) as e:
        with translate_write_faults(target, needed_bytes=4_000_000):
            save_safetensors("/dev/full", {"w": mx.zeros((1000,))})  # a real ENOSPC
    assert e.value.errno == errno.ENOSPC
    msg = e.value.message
    assert msg.startswith(f"cannot write {target}: the disk is full (need 4.00 MB, ")
    assert f"free in {tmp_path})" in msg and "partial file was removed" in e.value.hint


def test_atomic_path_translates_and_removes_the_temporary(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "out.bin"
    real_replace = os.replace

    def refuse(src, dst, **kw):
        if str(dst) == str(target):
            raise PermissionError(errno.EACCES, "Permission denied", str(dst))
        return real_replace(src, dst, **kw)

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteFailed, match=f"cannot write {target}: permission denied"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x" * 100)
    assert list(folder.iterdir()) == []


def test_a_native_writer_failure_is_diagnosed_by_probing_the_folder(tmp_path, monkeypatch):
    # mx.save_safetensors("path") raises RuntimeError without an errno when it cannot open.
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).startswith(str(tmp_path)) and flags & (os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    err = diagnose_native_failure(
        RuntimeError(f"[save_safetensors] Failed to open file {tmp_path}/x"), tmp_path / "x")
    assert err.message == f"cannot write {tmp_path / 'x'}: {tmp_path} is on a read-only file system"
    monkeypatch.setattr(os, "open", real_open)
    err = diagnose_native_failure(RuntimeError("[save_safetensors] boom"), tmp_path / "x",
                                  needed_bytes=1 << 60)
    assert "the disk is full (need 1153 PB" in err.message
    assert list(tmp_path.iterdir()) == []  # the probe is gone


def test_run_command_maps_a_stray_write_fault(monkeypatch, capsys):
    from engine.cli import make_job, run_command

    mod = types.ModuleType("fake_write_site")

    def run(args, job):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/folder/out.gguf")

    mod.run = run
    monkeypatch.setitem(sys.modules, "fake_write_site", mod)
    job, close = make_job("export", None, False)
    assert run_command("fake_write_site", types.SimpleNamespace(), job) == 1
    err = capsys.readouterr().err
    assert "[export] FAILED: cannot write /some/folder/out.gguf: permission denied" in err
    assert "Traceback" not in err
