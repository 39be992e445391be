"""Opt-in (TAILOR_SSH_LAB=folder, after `tests/distributed/ssh_lab.sh up`): a distributed run
over real ssh and sshd, two "hosts" on this machine, the second without the dataset at its path.
It found three bugs the local tests could not (names refused by mlx.launch's ring backend, a
stop never reaching remote ranks, their lines on the wrong stream): this keeps them found."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

LAB = os.environ.get("TAILOR_SSH_LAB", "")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not LAB, reason="needs the ssh lab: tests/distributed/ssh_lab.sh up, TAILOR_SSH_LAB=folder")]
HOSTS = "tailorlab-a,tailorlab-b"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab(tiny_model):
    from tests.train.conftest import write_toy_chat

    data = write_toy_chat(Path(LAB) / "data" / f"chat-{os.getpid()}.jsonl", n=24)
    first = json.loads(data.read_text().splitlines()[0])  # bytes of its own: copies are by
    first["messages"][-1]["content"] += f" {time.time_ns()}"  # content, an earlier one counts
    with open(data, "a") as f:
        f.write(json.dumps(first) + "\n")
    return str(tiny_model("qwen2")), data, {**os.environ, "TAILOR_HOME": f"{LAB}/home-a"}


def tailor(env, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=REPO, env=env,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def test_check_copy_train_and_per_host_news_over_real_ssh(lab):
    model, data, env = lab
    check = tailor(env, "hosts", "check", "--hosts", HOSTS, "--model", model, "--data",
                   str(data))
    out, _ = check.communicate(timeout=120)
    assert check.returncode == 0, out
    assert "✓ tailorlab-b: reachable" in out and "dataset will be copied" in out
    run = tailor(env, "train", "--model", model, "--data", str(data), "--name",
                 f"lab-{os.getpid()}", "--hosts", HOSTS, "--iters", "4", "--batch-size", "2",
                 "--rank", "4", "--eval-every", "0", "--save-every", "4",
                 "--baseline-prompts", "0", "--quiet", "--events", "-")
    out, err = run.communicate(timeout=400)
    assert run.returncode == 0, err[-3000:]
    logs = [e["message"] for e in map(json.loads, filter(None, out.splitlines()))
            if e["event"] == "log"]
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    assert (Path(LAB) / "home-b" / "cache" / "datasets" / f"{sha}.jsonl").read_bytes() == \
        data.read_bytes()
    assert any(m.startswith("copied ") and "sha256 verified there" in m for m in logs)
    assert any(m.startswith("rank 1 on tailorlab-b: joined on ") and "verified copy" in m
               for m in logs)
    assert any(m.startswith("rank 1 on tailorlab-b: finished on ") for m in logs)


def test_a_stop_reaches_the_ranks_on_other_hosts(lab):
    model, data, env = lab
    run = tailor(env, "train", "--model", model, "--data", str(data), "--name",
                 f"lab-stop-{os.getpid()}", "--hosts", HOSTS, "--iters", "400",
                 "--batch-size", "2", "--rank", "4", "--eval-every", "0", "--save-every", "2",
                 "--baseline-prompts", "0", "--quiet", "--events", "-")
    stopped_at, ended = None, None
    for line in run.stdout:
        e = json.loads(line) if line.startswith("{") else {}
        if e.get("event") == "step" and e["iteration"] == 3 and stopped_at is None:
            run.stdin.write("stop\n")
            run.stdin.flush()
            stopped_at = time.monotonic()
        if e.get("event") in ("finished", "failed", "cancelled"):
            ended = e
    assert run.wait(timeout=120) == 130 and ended["event"] == "cancelled", ended
    assert time.monotonic() - stopped_at < 30
