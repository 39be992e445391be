"""The domain functions hold their locks (engine/locks.py), not only the command runner: the
demo's export (export_gguf called directly) refuses a concurrent `library delete` with code
locked, and the runner's lock around the same call does not refuse its own job."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from engine import locks
from engine.cli import main
from engine.events import Progress
from engine.export.gguf_export import export_gguf
from engine.fuse import fuse_adapter

from .conftest import REPO, snapshot_tree
from .export.adapters import make_library_adapter


def _delete_in_another_process(name: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "engine", "library", "delete", name,
                        "--events", "-"], cwd=REPO, env=dict(os.environ), capture_output=True,
                       text=True, timeout=60)
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


@pytest.mark.parametrize("reader", ["export_gguf (as the demo calls it)", "fuse_adapter"])
def test_a_delete_during_a_direct_export_or_fuse_is_refused_as_locked(reader, tiny_model,
                                                                      tmp_path, tailor_home,
                                                                      monkeypatch):
    monkeypatch.setattr(locks, "CURRENT_COMMAND", None)  # (set by any earlier main() here)
    folder = make_library_adapter("pip", tiny_model("qwen2"))
    before = snapshot_tree(folder)
    seen: list[dict] = []

    def report(event):  # mid-job, at its first progress: another process tries to delete
        if isinstance(event, Progress) and not seen:
            seen.append(_delete_in_another_process("pip"))

    if reader.startswith("export"):
        out = tmp_path / "pip.q8_0.gguf"
        export_gguf("pip", out, "q8_0", verify=False, report=report, job="demo:export")
    else:
        out = tmp_path / "fused"
        fuse_adapter("pip", out, report=report, job="demo:fuse")
    assert out.exists()
    failed = seen[0]
    assert failed["event"] == "failed" and failed["code"] == "locked"
    assert failed["message"].startswith("the adapter 'pip' is in use by another job: ")
    assert ("demo:export" if reader.startswith("export") else "demo:fuse") in failed["message"]
    after = snapshot_tree(folder)
    after.pop("exports.json", None)  # the export listed itself beside the manifest
    assert after == before  # nothing was deleted
    assert not locks.is_held(locks.adapter_lock_path("pip"))  # released as the job ended
    assert not (tailor_home / "locks" / "adapter-pip.lock").exists()


def test_the_runners_lock_and_the_domains_do_not_refuse_each_other(tiny_model, tmp_path,
                                                                  capsys):
    make_library_adapter("pip", tiny_model("qwen2"))
    out = tmp_path / "pip.gguf"
    assert main(["export", "--adapter", "pip", "--quant", "q8_0", "--out", str(out),
                 "--no-verify"]) == 0, capsys.readouterr().err
    assert out.exists()
    assert main(["fuse", "--adapter", "pip", "--out", str(tmp_path / "fused")]) == 0
    assert not locks.is_held(locks.adapter_lock_path("pip"))


def test_a_reader_lock_is_reentrant_only_in_its_own_thread(tailor_home):
    import threading

    from engine import library

    outer = locks.adapter_lock("a", "export")
    with outer:
        with library.reading("a", None, "export"):  # the runner's hold counts
            assert locks.is_held(locks.adapter_lock_path("a"))
        assert locks.is_held(locks.adapter_lock_path("a"))  # still the outer one's
        refused: list[Exception] = []

        def other_thread():
            try:
                with library.reading("a", None, "export"):
                    pass
            except locks.Busy as e:
                refused.append(e)

        t = threading.Thread(target=other_thread)
        t.start()
        t.join(10)
        assert len(refused) == 1  # another thread is another job
        with pytest.raises(locks.Busy):  # and a writer's lock is never re-entrant
            locks.adapter_lock("a", "library delete").acquire()
    assert not locks.is_held(locks.adapter_lock_path("a"))
