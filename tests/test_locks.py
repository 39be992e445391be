"""One job per adapter and per output (issue 11: `train --resume NAME` ran beside NAME's own
training, and `library rename/delete` succeeded on a running adapter, which the job then
recreated). The lock is a real OS lock held by a second process; SIGKILL releases it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine import library, locks
from engine.cli import main
from tests.conftest import snapshot_tree

REPO = Path(__file__).resolve().parent.parent

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from engine import locks
    locks.CURRENT_COMMAND = sys.argv[3]
    kind, key = sys.argv[1], sys.argv[2]
    lock = locks.adapter_lock(key, "train") if kind == "adapter" else locks.output_lock(key, "export")
    lock.acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def holder(tailor_home):
    """``holder(kind, key, command)``: a separate process holding that lock until killed."""
    procs = []

    def start(kind: str, key: str, command: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, kind, key, command], cwd=REPO,
                             stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "TAILOR_HOME": str(tailor_home)})
        procs.append(p)
        assert p.stdout.readline().strip() == "locked"
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def _adapter(name: str) -> Path:
    folder = library.adapter_path(name)
    folder.mkdir(parents=True)
    library.write_manifest(folder, {"name": name, "status": "running"})
    (folder / "adapters.safetensors").write_bytes(b"weights")
    return folder


def test_a_second_train_on_a_running_adapter_is_refused(holder, tiny_model, tmp_path, capsys):
    from tests.train.conftest import write_toy_chat

    folder = _adapter("busy")
    before = snapshot_tree(folder)
    holder("adapter", "busy", "tailor train --model m --data d --name busy")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=8)
    rc = main(["train", "--resume", "busy", "--model", str(tiny_model("qwen2")),
               "--data", str(data)])
    err = capsys.readouterr().err
    assert rc == 1
    assert ("[train] FAILED: the adapter 'busy' is in use by another job: tailor train --model m "
            "--data d --name busy (pid ") in err
    assert "nothing was changed" in err and "Traceback" not in err
    assert snapshot_tree(folder) == before
    # a new run under the name of one that is training (or just starting) is refused too
    assert main(["train", "--model", str(tiny_model("qwen2")), "--data", str(data), "--name",
                 "busy"]) == 1
    assert "is in use by another job" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["library", "rename", "busy", "other"],
                                  ["library", "rename", "idle", "busy"],
                                  ["library", "delete", "busy"],
                                  ["library", "duplicate", "busy", "copy"],
                                  ["fuse", "--adapter", "busy", "--out", "{out}/fused"],
                                  ["export", "--adapter", "busy", "--out", "{out}/x.gguf"]])
def test_library_changes_and_readers_of_a_running_adapter_are_refused(argv, holder, tailor_home,
                                                                       tmp_path, capsys):
    _adapter("busy")
    _adapter("idle")
    before = snapshot_tree(tailor_home / "adapters")
    holder("adapter", "busy", "tailor train --resume busy")
    rc = main([a.format(out=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "the adapter 'busy' is in use by another job: tailor train --resume busy (pid" in err
    assert snapshot_tree(tailor_home / "adapters") == before
    assert not list(tmp_path.glob("fused*")) and not list(tmp_path.glob("x.gguf*"))


def test_two_exports_to_one_output_path(holder, tmp_path, tiny_model, capsys):
    out = tmp_path / "model.gguf"
    holder("output", str(out), f"tailor export --model m --out {out}")
    rc = main(["export", "--model", str(tiny_model("qwen2")), "--out", str(out), "--no-verify"])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"the output {out} is in use by another job: tailor export --model m --out {out}" in err
    assert not out.exists()


def test_a_sigkilled_holder_releases_the_lock(holder, tailor_home, capsys):
    _adapter("busy")
    p = holder("adapter", "busy", "tailor train --resume busy")
    assert locks.is_held(locks.adapter_lock_path("busy"))
    assert main(["library", "delete", "busy"]) == 1
    capsys.readouterr()
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    assert not locks.is_held(locks.adapter_lock_path("busy"))
    assert main(["library", "delete", "busy"]) == 0
    assert "moved 'busy' to the Trash" in capsys.readouterr().out
    assert not (tailor_home / "adapters" / "busy").exists()


def test_the_lock_is_released_when_the_job_ends(tailor_home):
    _adapter("a")
    with locks.adapter_lock("a", "train"):
        assert locks.is_held(locks.adapter_lock_path("a"))
        with pytest.raises(locks.Busy, match="the adapter 'a' is in use by another job"):
            library.rename_adapter("a", "b")
    assert not locks.is_held(locks.adapter_lock_path("a"))
    library.rename_adapter("a", "b")
    assert library.get_adapter("b").manifest["name"] == "b"
    assert not (tailor_home / "locks" / "adapter-a.lock").exists()  # removed as it ended


def test_a_lock_file_unlinked_by_its_last_holder_mid_acquire_is_not_trusted(monkeypatch,
                                                                            tailor_home):
    import fcntl

    lock = locks.adapter_lock("a", "train")
    real, calls = fcntl.flock, []

    def flock(fd, op):
        if not calls:  # the previous holder ends (and unlinks) between our open and flock
            calls.append(fd)
            os.unlink(lock.path)
        return real(fd, op)

    lock.path.parent.mkdir(parents=True, exist_ok=True)
    lock.path.write_text("")
    monkeypatch.setattr(fcntl, "flock", flock)
    lock.acquire()
    try:
        assert calls and os.path.samestat(os.fstat(lock.fd), os.stat(lock.path))
        monkeypatch.setattr(fcntl, "flock", real)
        assert locks.is_held(lock.path)
    finally:
        lock.release()
