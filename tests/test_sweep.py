"""Stale temporaries of killed jobs are swept at the next job's start and named (issue 11:
`.adapters.safetensors.tmp-*` and `.NAME.gguf.fused-*` folders the size of the whole model
were never cleaned up). Only Tailor's exact names, only in Tailor's folders, never a live
job's, never a user's file."""
from __future__ import annotations

import os
import time
from pathlib import Path

from engine import locks, sweep
from engine.cli import main
from tests.faults import leftover_temporaries
from tests.test_locks import holder  # noqa: F401 - fixture: a second process holding a lock

HOUR = 3600


def _make(path: Path, size: int = 100, age: float = 2 * HOUR, folder: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"\0" * size)
        os.utime(path / "model.safetensors", (time.time() - age,) * 2)
    else:
        path.write_bytes(b"\0" * size)
    os.utime(path, (time.time() - age,) * 2)
    return path


def _adapter(home: Path, name: str) -> Path:
    from engine import library

    folder = home / "adapters" / name
    folder.mkdir(parents=True)
    library.write_manifest(folder, {"name": name, "status": "finished"})
    return folder


# names a user (or another program) might give their own files: never touched
USER_FILES = [".notes.tmp-backup", ".x.tmp-1234567", ".x.tmp-1234567g", ".x.TMP-12345678",
              "model.gguf.fused-12345678", ".model.gguf.fused-1234", "x.tmp-12345678",
              ".x.tmp-12345678.bak", ".deleting", ".x.deleting.txt"]


def test_stale_temporaries_are_removed_at_the_next_job_and_reported(tailor_home, tmp_path,
                                                                      capsys):
    from tests.ollama.ggufs import make_gguf

    a = _adapter(tailor_home, "a")
    stale = [
        _make(a / ".adapters.safetensors.tmp-1a2b3c4d", 4000),
        _make(a / ".adapters.safetensors.tmp-0badc0de.safetensors"),  # older Tailor's name
        _make(a / "checkpoints" / ".step-0000002.tmp-deadbeef", folder=True),
        _make(tailor_home / "adapters" / ".b.tmp-copy", folder=True),
        _make(tailor_home / "adapters" / ".c.deleting", folder=True),
        _make(tailor_home / "exports" / ".m.gguf.tmp-00112233"),
    ]
    out = tmp_path / "out"
    fused = _make(out / ".model.gguf.fused-0badf00d", 2_000_000, folder=True)
    stale.append(fused)
    users = [_make(out / n) for n in USER_FILES] + [_make(a / n) for n in USER_FILES]
    gguf = make_gguf(tmp_path / "mine.gguf", "qwen2")

    rc = main(["ollama", "--gguf", str(gguf), "--name", "mine", "--offline",
               "--modelfile-dir", str(out / "mf")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert [p for p in stale if os.path.lexists(p)] == []
    assert f"removed {len(stale)} stale temporary files left by an interrupted job (2.0" in err
    assert str(fused) in err
    assert all(p.exists() for p in users)  # not Tailor's names: kept


def test_a_live_jobs_temporaries_and_young_ones_are_kept(holder, tailor_home):  # noqa: F811
    live = _adapter(tailor_home, "live")
    idle = _adapter(tailor_home, "idle")
    old_but_live = _make(live / ".adapters.safetensors.tmp-1a2b3c4d", age=5 * HOUR)
    young = _make(idle / ".manifest.json.tmp-00aa11bb", age=60)
    old = _make(idle / ".manifest.json.tmp-22cc33dd", age=2 * HOUR)
    holder("adapter", "live", "tailor train --resume live")
    removed = sweep.sweep_library(tailor_home)
    assert [r.path for r in removed] == [old]
    assert old_but_live.exists() and young.exists()


def test_the_job_holding_the_lock_removes_its_targets_temporaries_at_any_age(tailor_home):
    a = _adapter(tailor_home, "a")
    fresh = _make(a / ".adapters.safetensors.tmp-1a2b3c4d", age=0)
    other = _make(tailor_home / "adapters" / "b" / ".adapters.safetensors.tmp-1a2b3c4d", age=0)
    with locks.adapter_lock("a", "train"):
        removed = sweep.sweep_adapter_folder(a)
    assert [r.path for r in removed] == [fresh] and other.exists()


def test_a_folders_only_copy_is_never_removed(tailor_home):
    ckpts = _adapter(tailor_home, "a") / "checkpoints"
    # replaced "best" folder whose replacement never landed: the .old is the only copy
    only_copy = _make(ckpts / ".best.tmp-1a2b3c4d.old", folder=True)
    (ckpts / "step-0000001").mkdir()
    replaced = _make(ckpts / ".step-0000001.tmp-2b3c4d5e.old", folder=True)
    removed = sweep.sweep_library(tailor_home)
    assert [r.path for r in removed] == [replaced] and only_copy.exists()


def test_train_resume_sweeps_what_the_killed_run_left(tailor_home, tiny_model, tmp_path, capsys):
    from engine.train.config import make_config
    from engine.train.run import train_adapter
    from tests.train.conftest import write_toy_chat

    data = write_toy_chat(tmp_path / "toy.jsonl", n=16)
    cfg = make_config(iters=2, batch_size=2, save_every=1, eval_every=0, rank=4)
    info = train_adapter(str(tiny_model("qwen2")), data, "a", cfg)
    left = [_make(info.path / ".adapters.safetensors.tmp-1a2b3c4d", age=0),
            _make(info.path / "checkpoints" / ".step-0000003.tmp-3c4d5e6f", age=0, folder=True)]
    assert main(["train", "--resume", "a"]) == 0
    err = capsys.readouterr().err
    assert "removed 2 stale temporary files left by an interrupted job" in err
    assert leftover_temporaries(tailor_home) == [] and not any(p.exists() for p in left)


def _killed_push_staging(env) -> Path:
    """What a SIGKILLed `tailor push` leaves: its staging folder in the library, files inside."""
    import signal
    import subprocess
    import sys

    code = ("import os, signal\n"
            "from engine.hub.push import staging_folder\n"
            "staging = staging_folder()\n"
            "folder = staging.__enter__()\n"
            "(folder / 'adapters.safetensors').write_bytes(b'0' * 5000)\n"
            "print(folder, flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, cwd=Path(__file__).parent.parent, timeout=60)
    assert out.returncode == -signal.SIGKILL, out.stderr
    return Path(out.stdout.strip())


def test_a_killed_pushs_staging_folder_is_removed_by_the_next_command(tailor_home, capsys):
    killed = _killed_push_staging(dict(os.environ))
    assert killed.is_dir() and killed.parent == tailor_home / sweep.PUSH_STAGING
    from engine.hub.push import staging_folder

    with staging_folder() as live:  # this process's own push, in progress: kept
        (live / "README.md").write_text("card")
        old_style_young = _make(killed.parent / "0123456789ab", age=60, folder=True)
        old_style_old = _make(killed.parent / "ba9876543210", age=2 * HOUR, folder=True)
        users = _make(killed.parent / "my-notes", age=2 * HOUR, folder=True)
        _adapter(tailor_home, "a")
        assert main(["library", "rename", "a", "b"]) == 0
        err = capsys.readouterr().err
        assert not killed.exists() and str(killed) in err
        assert not old_style_old.exists()
        assert live.is_dir() and old_style_young.is_dir() and users.is_dir()
