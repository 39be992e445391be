"""`tailor push` (issue 23) against a stand-in Hub on 127.0.0.1 (tests/hub/fake_hub.py, reached
through HF_ENDPOINT): the repo is created and one commit holds the adapter (mlx-lm's and PEFT's
forms), a verified GGUF, the loss curve and the model card, which huggingface_hub's ModelCard
parses; nothing is sent before the file list is confirmed; an upload cut off part-way resumes
without sending again what the Hub already has; a stop cancels mid-upload; the user's data and
local paths are not published."""
from __future__ import annotations

import hashlib
import json

import pytest

from engine.cli import main as tailor
from engine.events import Cancelled, Job, Progress
from engine.library import read_manifest, write_manifest
from tests.conftest import edited_copy, snapshot_tree
from tests.export.adapters import make_library_adapter
from tests.hub.fake_hub import FakeHub

SECRET = "the-users-private-sentence-42"  # in the dataset and a held-out example only


@pytest.fixture
def hub(monkeypatch):
    from huggingface_hub import constants

    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline
        yield hub


@pytest.fixture
def adapter(tiny_model, tmp_path):
    """A finished library adapter with a dataset record, settings, a loss history and an
    evaluation, on a base whose card names its license."""
    from engine.evaluate.record import save_report
    from engine.results import EvalExample, EvalReport, EvalScores
    from engine.train.config import TrainConfig

    base = edited_copy(tiny_model("llama3"), tmp_path / "base")
    (base / "README.md").write_text("---\nlicense: apache-2.0\n---\n# tiny base\n")
    folder = make_library_adapter("style", base, rank=4, scale=2.0)
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"text": SECRET}) + "\n")
    manifest = read_manifest(folder)
    manifest["base_model"]["repo_id"] = "tiny-org/tiny-llama3"
    manifest.update(dataset={"path": str(data), "sha256": hashlib.sha256(data.read_bytes())
                             .hexdigest(), "schema": "text", "counts": {"train": 1}},
                    settings=TrainConfig(rank=4, alpha=8.0).to_dict(),
                    loss_history={"train": [[1, 3.0], [2, 2.5], [3, 2.0]],
                                  "valid": [[1, 3.1], [3, 2.4]]}, best_val_loss=2.4)
    write_manifest(folder, manifest)
    save_report(folder, EvalReport(adapter="style", verdict="the adapter is better on 1 of 1",
                                   data={"path": str(data), "sha256": "abc"},
                                   base=EvalScores(loss=3.0), tuned=EvalScores(loss=2.0),
                                   examples=[EvalExample(prompt=SECRET, reference=SECRET)],
                                   better=1))
    return folder


def push(*extra) -> int:
    return tailor(["push", "--adapter", "style", "--repo", "me/style-lora", *extra])


@pytest.mark.slow
def test_push_uploads_adapter_peft_gguf_loss_curve_and_a_card_huggingface_hub_reads(
        hub, adapter, capsys):
    from huggingface_hub import ModelCard

    before = snapshot_tree(adapter)
    assert push("--private", "--peft", "--gguf", "q8_0", "--yes") == 0
    out = capsys.readouterr().out
    assert "private repository me/style-lora, 7 files" in out and "pushed 7 files" in out
    repo = hub.repos["me/style-lora"]
    assert repo["private"] and len(hub.commits) == 1
    files = repo["files"]
    assert sorted(files) == ["README.md", "adapter_config.json", "adapter_model.safetensors",
                             "loss.png", "mlx/adapter_config.json", "mlx/adapters.safetensors",
                             "style-Q8_0.gguf"]
    assert files["mlx/adapters.safetensors"] == (adapter / "adapters.safetensors").read_bytes()
    assert files["style-Q8_0.gguf"][:4] == b"GGUF" and files["loss.png"][:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == \
        "tiny-org/tiny-llama3"
    assert json.loads(files["mlx/adapter_config.json"])["model"] == "tiny-org/tiny-llama3"
    card = ModelCard(files["README.md"].decode())
    assert (card.data.base_model, card.data.library_name, card.data.license) == (
        "tiny-org/tiny-llama3", "peft", "apache-2.0")
    assert {"tailor", "lora", "gguf", "peft"} <= set(card.data.tags)
    text = card.text
    sha = read_manifest(adapter)["dataset"]["sha256"]
    assert "`chat.jsonl`, sha256 `" + sha in text
    for setting in ("learning_rate", "rank", "alpha", "rslora", "lora_plus_ratio", "seed"):
        assert f"| {setting} |" in text
    assert "![Training and validation loss](loss.png)" in text
    assert "the adapter is better on 1 of 1" in text and "| loss | 3.000 | 2.000 |" in text
    for runner in ("mlx_lm.generate", "llama-cli --hf-repo me/style-lora", "ollama run hf.co/",
                   "lms get me/style-lora", "PeftModel.from_pretrained"):
        assert runner in text
    for name, data in files.items():  # never the data, never a local path
        assert SECRET.encode() not in data, name
        assert str(adapter.parent.parent).encode() not in data, name
    assert hub.validated and hub.validated[-1] == files["README.md"].decode()
    assert snapshot_tree(adapter) == before
    assert not any((adapter.parent.parent / "push-staging").iterdir())  # staging removed


def test_nothing_is_sent_before_the_list_is_confirmed(hub, adapter, capsys):
    assert push("--dry-run") == 0
    out = capsys.readouterr().out
    assert "public repository me/style-lora" in out and "mlx/" not in out
    assert "adapters.safetensors" in out and "loss.png" in out
    assert push() == 1  # no --yes and no terminal to ask in
    err = capsys.readouterr().err
    assert "nothing was uploaded to me/style-lora: the file list was not confirmed" in err
    assert "--yes" in err
    assert hub.log == [] and hub.repos == {}


def test_a_push_cut_off_mid_upload_resumes_without_sending_again(hub, adapter, capsys):
    # the loss curve is the last LFS file: the two before it arrive, then the link drops
    from engine.hub.png import loss_curve_png

    manifest = read_manifest(adapter)
    history = manifest["loss_history"]
    hub.fail_oid = hashlib.sha256(loss_curve_png(history["train"], history["valid"])).hexdigest()
    assert push("--peft", "--yes") == 1
    err = capsys.readouterr().err
    assert "cut off" in err and "sends only the files the Hub lacks" in err
    assert hub.commits == []
    stored = set(hub.objects)
    assert len(stored) == 2 and hub.fail_oid not in stored
    first = len(hub.puts())
    hub.fail_oid = None
    assert push("--peft", "--yes") == 0
    again = [p.rsplit("/", 1)[-1] for p in hub.puts()[first:]]
    assert again == [hashlib.sha256(loss_curve_png(history["train"], history["valid"]))
                     .hexdigest()]  # only the missing object
    assert len(hub.commits) == 1 and "loss.png" in hub.repos["me/style-lora"]["files"]


def test_a_stop_cancels_mid_upload_and_commits_nothing(hub, adapter):
    from engine.hub.push import plan_push, stage, staging_folder, upload

    job = Job("push")

    def report(event):
        if isinstance(event, Progress) and event.stage == "upload":
            job.cancel.cancel("stop requested")

    job.report = report
    plan = plan_push("style", "me/style-lora")
    with staging_folder() as folder, pytest.raises(Cancelled):
        upload(stage(plan, folder, job), folder, job)
    assert hub.commits == []


def test_bad_repo_ids_and_no_login_are_refused_before_any_work(hub, adapter, monkeypatch,
                                                              capsys):
    assert tailor(["push", "--adapter", "style", "--repo", "no-owner", "--yes"]) == 1
    assert "'no-owner' is not a Hub repository id" in capsys.readouterr().err
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HOME", str(adapter.parent / "no-hf-home"))
    assert push("--yes") == 1
    assert "not logged in to the Hugging Face Hub" in capsys.readouterr().err
    assert hub.log == []


@pytest.mark.slow
@pytest.mark.parametrize("answer, uploaded", [("n", False), ("y", True)])
def test_in_a_terminal_the_push_asks_after_listing_the_files(hub, adapter, tailor_home, answer,
                                                             uploaded):
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    main, worker = pty.openpty()
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TAILOR_HOME": str(tailor_home)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", "push", "--adapter", "style",
                             "--repo", "me/asked"], stdin=worker, stdout=worker,
                            stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    os.close(worker)
    seen, deadline = b"", time.monotonic() + 120
    while b"[y/N]" not in seen and time.monotonic() < deadline:
        if select.select([main], [], [], 1)[0]:
            seen += os.read(main, 4096)
    assert b"adapters.safetensors" in seen and b"Upload these files to me/asked?" in seen
    assert hub.log == []  # asked before anything was sent
    os.write(main, f"{answer}\n".encode())
    while proc.poll() is None and time.monotonic() < deadline:
        if select.select([main], [], [], 0.5)[0]:
            try:
                seen += os.read(main, 4096)
            except OSError:
                break
    assert proc.wait(timeout=60) == (0 if uploaded else 1)
    os.close(main)
    assert ("me/asked" in hub.repos) is uploaded
