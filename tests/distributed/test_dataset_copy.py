"""--hosts: a host without the dataset (or with a different one at that path) gets a copy,
verified by sha256, in its own Tailor folder; the rank there reads the copy; nothing of the
user's is written over. The "remote host" is this machine seen through an injected runner:
its ssh command runs here under bash with the host's own TAILOR_HOME, through the real
streaming code (ssh_runner), so the probe, the receiver and the rank's look-up are the real
ones; only ssh itself is left out."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.events import Cancelled, Job, Log, Progress, TailorError
from engine.results import (DATASET_COPY_THERE, DATASET_SAME, DATASET_WILL_COPY)
from engine.train import hosts as hosts_mod
from engine.train.hosts import (Host, check_hosts, copy_datasets, dataset_for_rank,
                                ssh_runner, survey)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FakeHost:
    """Runs `ssh ... HOST CMD` as `bash -c CMD` here, with the host's own TAILOR_HOME and the
    paths in ``moved`` pointing where that host keeps them (its own file at the same path)."""

    def __init__(self, home: Path, moved: dict[str, str] | None = None, **env: str):
        self.home, self.moved, self.env = home, moved or {}, env
        self.calls: list[list[str]] = []

    def __call__(self, argv, send=None, progress=None):
        self.calls.append(argv)
        if argv[:2] == ["ssh", "-G"]:
            return subprocess.CompletedProcess(argv, 0, "user me\nhostname 127.0.0.1\n", "")
        remote = argv[-1]
        for here, there in self.moved.items():
            remote = remote.replace(here, there)
        # (`; exit $?`: bash stays the parent, as sshd is there: a kill ends it, not the
        # remote command, which then sees its input end)
        local = ["env", f"TAILOR_HOME={self.home}", *(f"{k}={v}" for k, v in self.env.items()),
                 "bash", "-c", remote + "; exit $?"]
        return ssh_runner(local, send=send, progress=progress)


@pytest.fixture
def inputs(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    data = tmp_path / "user" / "chat.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"text": f"example {i}"}) + "\n" for i in range(50)))
    return model, data


def recording_job():
    events = []
    return Job("train", report=events.append), events


def test_a_host_without_the_dataset_gets_a_verified_copy_in_its_tailor_folder(tmp_path,
                                                                             inputs):
    model, data = inputs
    before = sha(data)
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(tmp_path / "mac2-has-nothing")})
    report = check_hosts([Host("mac2", []), Host("mac3", [])], str(model), str(data),
                         runner=mac2, copy_data=True)
    copy = tmp_path / "mac2-home" / "cache" / "datasets" / f"{before}.jsonl"
    assert [h.dataset for h in report.hosts] == [DATASET_WILL_COPY] * 2
    assert report.hosts[0].dataset_path == str(copy) and not copy.exists()

    job, events = recording_job()
    assert copy_datasets(report, job, runner=mac2) == ["mac2", "mac3"]
    assert sha(copy) == before and sha(data) == before  # the user's file untouched
    logs = [e.message for e in events if isinstance(e, Log)]
    assert logs[0].startswith("copying chat.jsonl (") and "to mac2 (1 of 2)" in logs[0]
    assert f"copied chat.jsonl to mac2:{copy}" in logs[1] and "sha256 verified" in logs[1]
    assert "to mac3 (2 of 2)" in logs[2]
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress and progress[-1].done == progress[-1].total  # the bar reaches its end
    assert not [p for p in copy.parent.iterdir() if p.name.startswith(".")]  # no temporary

    # the next run finds the copy and sends nothing
    again = survey([Host("mac2", [])] * 2, str(model), str(data), runner=mac2)
    assert again.hosts[0].dataset == DATASET_COPY_THERE and again.hosts[0].dataset_path == \
        str(copy)
    job, events = recording_job()
    assert copy_datasets(again, job, runner=mac2) == [] and not events


def test_a_different_dataset_at_the_same_path_is_left_alone_and_the_copy_used(tmp_path,
                                                                            inputs, monkeypatch):
    model, data = inputs
    theirs = tmp_path / "mac2-files" / "chat.jsonl"  # mac2's own file at that path
    theirs.parent.mkdir()
    theirs.write_text('{"text": "something else"}\n')
    mine_there = theirs.read_bytes()
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(theirs)})
    report = check_hosts([Host("mac1", []), Host("mac2", [])], str(model), str(data),
                         runner=FakeHost(tmp_path / "mac2-home"), copy_data=True)
    assert report.hosts[0].dataset == DATASET_SAME  # (mac1: this machine's own file)
    report = survey([Host("mac2", []), Host("mac2", [])], str(model), str(data), runner=mac2)
    assert report.hosts[1].dataset == DATASET_WILL_COPY
    copy_datasets(report, Job("train"), runner=mac2)
    assert theirs.read_bytes() == mine_there  # never written over

    # the rank on mac2 reads the copy (its own file at the path is not the run's)
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "mac2-home"))
    path, copied = dataset_for_rank(str(theirs), sha(data))
    assert copied and sha(Path(path)) == sha(data)
    assert dataset_for_rank(str(data), sha(data)) == (str(data), False)  # same bytes: itself
    monkeypatch.setenv("TAILOR_HOME", str(tmp_path / "mac3-home"))  # no copy there
    with pytest.raises(TailorError) as e:
        dataset_for_rank(str(theirs), sha(data))
    assert f"neither the run's dataset at {theirs} nor a copy" in e.value.message
    assert "--hosts from the first host" in e.value.hint


def test_no_copy_data_refuses_a_host_without_the_dataset(tmp_path, inputs):
    model, data = inputs
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(tmp_path / "nothing")})
    with pytest.raises(TailorError) as e:
        check_hosts([Host("mac2", []), Host("mac2", [])], str(model), str(data), runner=mac2)
    assert e.value.message == f"host mac2 has no dataset at {data}"
    assert "leave out --no-copy-data" in e.value.hint
    assert not (tmp_path / "mac2-home" / "cache").exists()


def test_the_model_is_never_copied_a_host_without_it_is_refused(tmp_path, inputs):
    model, data = inputs
    mac2 = FakeHost(tmp_path / "mac2-home", {str(model): str(tmp_path / "no-model")})
    with pytest.raises(TailorError) as e:
        check_hosts([Host("mac2", [])] * 2, str(model), str(data), runner=mac2, copy_data=True)
    assert e.value.message == f"host mac2 has no base model at {model}"
    assert "too big to copy" in e.value.hint


def test_a_model_given_as_a_repo_id_is_looked_for_in_each_hosts_hub_cache(tmp_path, inputs):
    """Not as a folder under the current directory (the check said "no base model at
    /cwd/owner/name", so a repo id could never run on several hosts), and never downloaded."""
    _, data = inputs
    cache = tmp_path / "hub"
    snap = cache / "models--owner--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (cache / "models--owner--tiny" / "refs").mkdir()
    (cache / "models--owner--tiny" / "refs" / "main").write_text("a" * 40)
    has = FakeHost(tmp_path / "mac2-home", HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    report = check_hosts([Host("mac2", [])] * 2, "owner/tiny", str(data), runner=has)
    assert report.hosts[0].model == "present"
    lacks = FakeHost(tmp_path / "mac2-home", HF_HUB_CACHE=str(tmp_path / "empty-hub"),
                     HF_HUB_OFFLINE="1")
    with pytest.raises(TailorError) as e:
        check_hosts([Host("mac2", [])] * 2, "owner/tiny", str(data), runner=lacks)
    assert e.value.message == "host mac2 does not have owner/tiny in its Hugging Face cache"
    assert "tailor model download owner/tiny` on mac2" in e.value.hint


def test_a_copy_that_arrives_damaged_is_removed_and_the_run_refused(tmp_path, inputs):
    model, data = inputs
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(tmp_path / "nothing")})
    report = survey([Host("mac2", [])] * 2, str(model), str(data), runner=mac2)
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(data.read_bytes()[:-3] + b"xx\n")  # same size, other bytes

    def flipping(argv, send=None, progress=None):
        return mac2(argv, send=damaged if send else None, progress=progress)

    with pytest.raises(TailorError) as e:
        copy_datasets(report, Job("train"), runner=flipping)
    assert e.value.message.startswith(f"copying {data} to mac2 failed: the copy arrived with")
    assert "it was removed" in e.value.message and e.value.hint
    folder = tmp_path / "mac2-home" / "cache" / "datasets"
    assert list(folder.iterdir()) == []  # neither the copy nor its temporary


def test_a_cancel_during_the_copy_stops_it_and_leaves_nothing_on_the_host(tmp_path, inputs):
    model, data = inputs
    with open(data, "a") as f:  # three blocks of 1 MiB and a bit
        f.write(("x" * 1023 + "\n") * 3100)
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(tmp_path / "nothing")})
    report = survey([Host("mac2", [])] * 2, str(model), str(data), runner=mac2)
    job = Job("train")

    def report_event(e):
        if isinstance(e, Progress) and e.done > 0:
            job.cancel.cancel("stop requested")

    job.report = report_event
    with pytest.raises(Cancelled):
        copy_datasets(report, job, runner=mac2)
    folder = tmp_path / "mac2-home" / "cache" / "datasets"
    deadline = time.monotonic() + 20  # the far end sees the stream end, then cleans up
    while list(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert list(folder.iterdir()) == []


def test_the_launcher_checks_copies_then_gives_mlx_launch_the_hosts_ips(tmp_path, inputs,
                                                                       monkeypatch):
    """tailor train --hosts mac1,mac2: mac1 is this machine (the probe's name matches), mac2
    lacks the dataset: it is copied before mlx.launch starts, and mlx.launch gets a host file
    with IPs (its ring backend refuses bare names)."""
    from engine.cli import build_parser
    from engine.train import launch

    model, data = inputs
    mac2 = FakeHost(tmp_path / "mac2-home", {str(data): str(tmp_path / "nothing")})
    seen = {}

    def relay(proc, hosts, job, name):
        seen["cmd"] = proc.args
        hostfile = proc.args[proc.args.index("--hostfile") + 1]
        seen["hostfile"] = json.loads(Path(hostfile).read_text())
        return 0

    class NoProcess:
        def __init__(self, args):
            self.args = args

    monkeypatch.setattr(launch, "_relay", relay)
    monkeypatch.setattr(launch, "_start_ranks", NoProcess)
    monkeypatch.setattr(sys, "argv", ["tailor", "train"])  # (the parser configures it)
    args = build_parser().parse_args(["train", "--model", str(model), "--data", str(data),
                                      "--name", "n", "--hosts", "mac1,mac2",
                                      "--batch-size", "2"])
    job, events = recording_job()
    assert launch.launch_training(args, job, argv=["train", "--hosts", "mac1,mac2"],
                                  runner=mac2) == 0
    assert seen["hostfile"] == [{"ssh": "mac1", "ips": ["127.0.0.1"]},
                                {"ssh": "mac2", "ips": ["127.0.0.1"]}]
    assert seen["cmd"][1:3] == ["--backend", "ring"]
    assert (tmp_path / "mac2-home" / "cache" / "datasets" / f"{sha(data)}.jsonl").is_file()
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any("copied chat.jsonl to mac2:" in m for m in logs)
    assert logs[-1] == "starting 2 ranks with mlx.launch on mac1, mac2"


def test_the_first_host_must_be_this_machine(tmp_path, inputs):
    """Rank 0 runs on the first host and writes the adapter there: another machine first
    would put the adapter in that machine's library."""
    model, data = inputs
    other = {"tailor": None}

    def answering(argv, send=None, progress=None):
        from engine import __version__
        import mlx.core as mx

        other.update(tailor=__version__, mlx=mx.__version__, model=True,
                     data=sha(data), node="studio.local")
        return subprocess.CompletedProcess(argv, 0, json.dumps(other) + "\n", "")

    with pytest.raises(TailorError) as e:
        check_hosts([Host("studio", []), Host("mac1", [])], str(model), str(data),
                    runner=answering)
    assert "the first host, studio, is another machine (studio.local" in e.value.message
    assert e.value.hint == "list this Mac first (its name or IP)"


@pytest.mark.parametrize("text, words", [
    ("[{\"ssh\": \"mac1\"},\n oops]", "line 2"),
    ("{\"backend\": \"ring\"}", "no 'hosts' entry"),
    ("\"mac1,mac2\"", "not a list of hosts"),
])
def test_a_bad_host_file_is_named_with_the_line_and_what_is_wrong(tmp_path, text, words):
    f = tmp_path / "hosts.json"
    f.write_text(text)
    with pytest.raises(TailorError) as e:
        hosts_mod.parse_hosts(str(f), 0)
    assert e.value.message.startswith(f"{f}") and "not an MLX host file" in e.value.message
    assert words in e.value.message and "ips" in e.value.hint


def test_host_lists_that_cannot_work_are_refused(tmp_path):
    f = tmp_path / "hosts.json"
    f.write_text(json.dumps({"backend": "ring", "hosts": [{"ssh": "a", "ips": ["10.0.0.1"]},
                                                          {"ssh": "b", "ips": ["10.0.0.2"]}]}))
    assert [h.ips for h in hosts_mod.parse_hosts(str(f), 0)] == [["10.0.0.1"], ["10.0.0.2"]]
    with pytest.raises(TailorError, match="no such host file"):
        hosts_mod.parse_hosts(str(tmp_path / "missing.json"), 0)
    with pytest.raises(TailorError, match="127.0.0.1 cannot be listed with other machines"):
        hosts_mod.parse_hosts("127.0.0.1,mac2", 0)
    with pytest.raises(TailorError, match="'mac2;rm' is not a host name"):
        hosts_mod.parse_hosts("mac1,mac2;rm", 0)


def test_a_name_without_an_address_is_refused_with_the_host_file_hint():
    def no_hostname(argv, send=None, progress=None):
        return subprocess.CompletedProcess(argv, 0, "hostname no-such-host.invalid\n", "")

    with pytest.raises(TailorError) as e:
        hosts_mod.ring_hosts([Host("mac1", []), Host("mac2", ["10.0.0.2"])], no_hostname)
    assert e.value.message.startswith("cannot find the IP address of host mac1")
    assert '"ips"' in e.value.hint
    assert hosts_mod.ring_hosts([Host("10.0.0.1", []), Host("b", ["10.0.0.2"])],
                                no_hostname)[0].ips == ["10.0.0.1"]


def test_the_receiver_never_leaves_a_temporary_when_the_folder_refuses(tmp_path, monkeypatch):
    """A host whose Tailor folder cannot take the copy (its datasets folder is a file here; a
    full or read-only disk ends the same way): the answer names the folder, nothing is left,
    and the file in the way is untouched."""
    import io

    from engine.train import host_probe

    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    (home / "cache" / "datasets").write_text("the user's file")
    monkeypatch.setenv("TAILOR_HOME", str(home))
    body = b'{"text": "x"}\n'
    digest = hashlib.sha256(body).hexdigest()
    answer = host_probe.receive(digest, ".jsonl", len(body), io.BytesIO(body))
    assert answer["error"].startswith("cannot write ") and "datasets" in answer["error"]
    assert sorted(p.name for p in (home / "cache").iterdir()) == ["datasets"]
    assert (home / "cache" / "datasets").read_text() == "the user's file"
    (home / "cache" / "datasets").unlink()
    ok = host_probe.receive(digest, ".jsonl", len(body), io.BytesIO(body))
    assert Path(ok["path"]).read_bytes() == body and ok["bytes"] == len(body)
