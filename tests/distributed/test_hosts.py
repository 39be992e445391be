"""--hosts: the checks made over ssh before a distributed run starts (an injected runner
stands in for ssh: it answers as a remote host would, or fails as ssh does)."""
from __future__ import annotations

import json
import subprocess
import sys

import mlx.core as mx
import pytest

from engine import __version__
from engine.events import TailorError
from engine.train.launch import (Host, check_hosts, child_argv, local_facts,
                                 mlx_launch_command, parse_hosts)


@pytest.fixture
def inputs(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hello"}\n')
    return str(model), str(data)


def answering(**per_host):
    """A runner: host -> the probe's answer (a dict), or an int (ssh's exit status)."""
    calls = []

    def run(argv):
        calls.append(argv)
        host = argv[argv.index("BatchMode=yes") + 3]
        answer = per_host[host]
        if isinstance(answer, int):
            return subprocess.CompletedProcess(argv, answer, "",
                                               f"ssh: connect to host {host} port 22: "
                                               "Connection refused")
        return subprocess.CompletedProcess(argv, 0, json.dumps(answer) + "\n", "")

    run.calls = calls
    return run


def good(model, data):
    return {"tailor": __version__, "mlx": mx.__version__, "model": True,
            "data": local_facts(model, data)["data"]}


def test_every_remote_host_is_checked_and_local_ranks_need_no_ssh(inputs):
    model, data = inputs
    run = answering(mac2=good(model, data), mac3=good(model, data))
    check_hosts([Host("127.0.0.1", []), Host("mac2", []), Host("mac3", [])], model, data,
                runner=run)
    assert [c[5] for c in run.calls] == ["mac2", "mac3"]
    assert model in run.calls[0][-1] and data in run.calls[0][-1]  # the same paths there


@pytest.mark.parametrize("answer, words", [
    (255, ["host mac2 cannot be reached over ssh", "Connection refused"]),
    ("old-tailor", ["host mac2 has Tailor 0.0.1", f"this machine {__version__}"]),
    ("old-mlx", ["host mac2 has MLX 0.1.0", f"this machine {mx.__version__}"]),
    ("no-model", ["host mac2 has no base model at"]),
    ("no-data", ["host mac2 has no dataset at"]),
    ("other-data", ["host mac2 has a different dataset at"]),
])
def test_a_host_that_differs_is_named_with_why_before_anything_starts(inputs, answer, words):
    model, data = inputs
    reply = good(model, data)
    if answer == "old-tailor":
        reply["tailor"] = "0.0.1"
    elif answer == "old-mlx":
        reply["mlx"] = "0.1.0"
    elif answer == "no-model":
        reply["model"] = False
    elif answer == "no-data":
        reply["data"] = None
    elif answer == "other-data":
        reply["data"] = "0" * 64
    elif isinstance(answer, int):
        reply = answer
    with pytest.raises(TailorError) as e:
        check_hosts([Host("127.0.0.1", []), Host("mac2", [])], model, data,
                    runner=answering(mac2=reply))
    for w in words:
        assert w in e.value.message
    assert e.value.hint


def test_the_probe_runs_and_answers_as_the_checks_expect(inputs):
    """The probe script itself, run here as ssh would run it there (no ssh: the command's
    remote part through bash)."""
    model, data = inputs

    def via_bash(argv):
        return subprocess.run(["bash", "-c", argv[-1]], capture_output=True, text=True,
                              timeout=60)

    check_hosts([Host("mac2", [])], model, data, runner=via_bash)  # same machine: all equal
    with pytest.raises(TailorError, match="host mac2 has no base model"):
        check_hosts([Host("mac2", [])], model + "-missing", data, runner=via_bash)


def test_host_lists_and_mlx_host_files(tmp_path):
    assert [h.ssh for h in parse_hosts("mac1, mac2", 0)] == ["mac1", "mac2"]
    assert [h.ssh for h in parse_hosts(None, 3)] == ["127.0.0.1"] * 3
    f = tmp_path / "hosts.json"
    f.write_text(json.dumps([{"ssh": "mac1", "ips": ["10.0.0.1"]},
                             {"ssh": "mac2", "ips": ["10.0.0.2"]}]))
    hosts = parse_hosts(str(f), 0)
    assert [(h.ssh, h.ips) for h in hosts] == [("mac1", ["10.0.0.1"]), ("mac2", ["10.0.0.2"])]
    assert mlx_launch_command(hosts, ["train"], f)[3:5] == ["--hostfile", str(f)]
    f.write_text("[{\"name\": 1}]")
    with pytest.raises(TailorError, match="not an MLX host file"):
        parse_hosts(str(f), 0)
    with pytest.raises(TailorError, match="needs two or more"):
        parse_hosts("mac1", 0)


def test_every_rank_runs_the_same_command_with_events_for_the_launcher():
    argv = ["train", "--model", "m", "--ranks", "2", "--events", "out.jsonl", "--name", "x"]
    assert child_argv(argv) == ["train", "--model", "m", "--name", "x", "--quiet", "--events",
                                "-"]
    cmd = mlx_launch_command([Host("127.0.0.1", [])] * 2, child_argv(argv), None)
    assert cmd[1:5] == ["--backend", "ring", "-n", "2"]
    assert cmd[cmd.index("--") + 1:cmd.index("--") + 4] == [sys.executable, "-m", "engine"]


def test_missing_inputs_are_refused_before_any_rank_starts(monkeypatch):
    import argparse

    from engine.events import Job
    from engine.train import launch

    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    args = argparse.Namespace(ranks=2, hosts=None, model=None, data="d.jsonl", name=None,
                              resume=None)
    with pytest.raises(TailorError, match="missing --model, --name"):
        launch.launch_training(args, Job("train"))


@pytest.mark.parametrize("flags, words", [
    (["--batch-size", "2"], "--batch-size 2 is smaller than the number of ranks (3)"),
])
def test_what_ranks_cannot_do_is_refused_before_any_rank_starts(monkeypatch, flags, words):
    from engine.cli import build_parser
    from engine.events import Job
    from engine.train import launch

    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: pytest.fail("launched"))
    monkeypatch.setattr(sys, "argv", ["tailor", "train"])
    args = build_parser().parse_args(["train", "--model", "m", "--data", "d", "--name", "n",
                                      "--ranks", "3", *flags])
    with pytest.raises(TailorError) as e:
        launch.launch_training(args, Job("train"))
    assert words in e.value.message and e.value.hint
