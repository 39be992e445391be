"""Data-parallel training on 2 local ranks (mlx.launch, ring backend on 127.0.0.1): the same
run as one process with the same global batch, resume after a rank is killed, cancel."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from engine import library
from tests.train.conftest import REPO, events_of, run_tailor, tailor_cmd, write_toy_chat

# no dropout: each rank draws its own masks, so only dropout-free runs can match one process
# bitwise; grad accumulation 2 so the per-micro-batch weighting is exercised
ARGS = ["--iters", "8", "--save-every", "2", "--eval-every", "4", "--learning-rate", "2e-3",
        "--rank", "4", "--dropout", "0", "--batch-size", "4", "--grad-accumulation", "2",
        "--baseline-prompts", "0", "--quiet", "--events", "-"]
TOLERANCE = 1e-5


def _weights(name: str) -> dict[str, np.ndarray]:
    w = mx.load(str(library.get_adapter(name).path / "adapters.safetensors"))
    return {k: np.array(v) for k, v in w.items()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def _manifest(name: str) -> dict:
    return library.get_adapter(name).manifest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_model):
    data = write_toy_chat(tmp_path_factory.mktemp("data") / "toy.jsonl", n=40)
    return tiny_model("qwen2"), data


def _train(inputs, name: str, *extra: str) -> subprocess.CompletedProcess:
    model, data = inputs
    done = run_tailor("train", "--model", str(model), "--data", str(data), "--name", name,
                      *ARGS, *extra, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_same_global_batch(inputs):
    one = _train(inputs, "one")
    two = _train(inputs, "two", "--ranks", "2")
    diff = _max_diff(_weights("one"), _weights("two"))
    assert diff < TOLERANCE, diff
    a, b = _manifest("one"), _manifest("two")
    for (s1, l1), (s2, l2) in zip(a["loss_history"]["train"], b["loss_history"]["train"],
                                  strict=True):
        assert s1 == s2 and abs(l1 - l2) <= TOLERANCE * max(1.0, abs(l1))
    for (_, v1), (_, v2) in zip(a["loss_history"]["valid"], b["loss_history"]["valid"],
                                strict=True):
        assert abs(v1 - v2) <= TOLERANCE * max(1.0, abs(v1))
    assert b["trained_tokens"] == a["trained_tokens"]  # every rank's tokens counted once
    assert b["distributed"]["ranks"] == 2 and len(b["distributed"]["hosts"]) == 2
    assert a["distributed"]["ranks"] == 1
    started = [e for e in events_of(two.stdout) if e["event"] == "started"]
    assert len(started) == 1 and started[0]["info"]["distributed"]["ranks"] == 2
    # one event stream: rank 0's; the checkpoints are rank 0's alone, in the library
    kinds = [e["event"] for e in events_of(two.stdout)]
    assert kinds.count("finished") == 1
    steps = sorted(p.name for p in (library.get_adapter("two").path / "checkpoints").iterdir())
    assert steps[-1] == "step-0000008"


def _rank_pid(home: str, rank: int) -> int | None:
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"MLX_RANK={rank}".encode() in env and f"TAILOR_HOME={home}".encode() in env:
            return int(p.name)
    return None


def _start_two_ranks(inputs, name: str) -> tuple[subprocess.Popen, list[dict]]:
    """Start a 2-rank run; -> the launcher and its events up to the checkpoint of step 2."""
    model, data = inputs
    proc = subprocess.Popen(tailor_cmd("train", "--model", str(model), "--data", str(data),
                                       "--name", name, *ARGS, "--ranks", "2"),
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    events = []
    for line in proc.stdout:
        if line.startswith("{"):
            events.append(json.loads(line))
            if events[-1]["event"] == "checkpoint" and events[-1]["iteration"] >= 2:
                return proc, events
    pytest.fail(f"no checkpoint: {events[-3:]} {proc.stderr.read()[-2000:]}")


def _copy_adapter(src: str, dst: str) -> None:
    folder = library.get_adapter(src).path
    shutil.copytree(folder, folder.parent / dst)
    m = json.loads((folder.parent / dst / "manifest.json").read_text())
    m["name"] = dst
    (folder.parent / dst / "manifest.json").write_text(json.dumps(m))


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_in_bounded_time_and_resume_completes(inputs, tailor_home):
    proc, events = _start_two_ranks(inputs, "killed")
    pid = _rank_pid(str(tailor_home), 1)
    assert pid, "rank 1 not found"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = proc.communicate(timeout=60)  # no hang: bounded
    elapsed = time.monotonic() - killed_at
    events += events_of(out)
    assert proc.returncode == 1, err[-2000:]
    failed = [e for e in events if e["event"] == "failed"]
    assert failed and "another rank of the distributed run stopped" in failed[-1]["message"]
    assert "--resume killed" in failed[-1]["hint"]
    assert elapsed < 60
    m = _manifest("killed")
    assert m["status"] == "failed" and m["steps"] < 8

    # the last complete checkpoint resumes on one machine, one process, and on 2 ranks again
    _copy_adapter("killed", "killed-alone")
    alone = run_tailor("train", "--resume", "killed-alone", "--quiet", "--events", "-",
                       timeout=400)
    assert alone.returncode == 0, alone.stderr[-3000:]
    again = run_tailor("train", "--resume", "killed", "--ranks", "2", "--quiet", "--events",
                       "-", timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    _train(inputs, "straight")
    for name in ("killed-alone", "killed"):
        diff = _max_diff(_weights(name), _weights("straight"))
        assert diff < TOLERANCE, (name, diff)
        assert _manifest(name)["status"] == "finished"
    assert _manifest("killed")["distributed"]["ranks"] == 2


@pytest.mark.slow
def test_stop_on_the_launchers_stdin_stops_every_rank_together(inputs):
    """A stop reaches every rank (mlx.launch forwards stdin) and is summed into the next
    batch's counts: ranks that disagreed would leave rank 0 waiting or failed, not cancelled."""
    proc, events = _start_two_ranks(inputs, "stopped")
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    events += events_of(out)
    assert proc.returncode == 130, err[-2000:]
    assert not [e for e in events if e["event"] == "failed"]
    cancelled = [e for e in events if e["event"] == "cancelled"]
    assert cancelled and "--resume stopped" in cancelled[0]["message"]
    m = _manifest("stopped")
    assert m["status"] == "cancelled" and m["steps"] < 8
    assert cancelled[0]["checkpoint"].endswith(f"step-{m['steps']:07d}")
