"""`tailor train --objective dpo|orpo` on a fixture model: held-out reward accuracy rises well
above chance, metrics are streamed and kept, the result fuses and exports to GGUF as any
adapter, --init-adapter starts from an SFT adapter (recorded), refusals are named, and a run
killed with SIGKILL and resumed equals an uninterrupted one."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess

import mlx.core as mx
import numpy as np
import pytest

from engine import library
from engine.atomic import sha256_file
from tests.train.conftest import (REPO, TOPICS, events_of, run_tailor, tailor_cmd,
                                  write_toy_chat)

CHOSEN, REJECTED = "mountain river fish", "I do not know."
FAST = ["--rank", "4", "--batch-size", "4", "--learning-rate", "2e-3", "--baseline-prompts",
        "0", "--quiet", "--events", "-"]


def write_pairs(path, n: int = 40):
    import random

    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = f"Tell me about {rng.choice(TOPICS)} number {i}."
            f.write(json.dumps({"prompt": q, "chosen": CHOSEN, "rejected": REJECTED}) + "\n")
    return path


def _train(model_dir, data, name, *args):
    out = run_tailor("train", "--model", str(model_dir), "--data", str(data), "--name", name,
                     *args, *FAST)
    assert out.returncode == 0, out.stderr[-3000:]
    return events_of(out.stdout)


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_training_wins_held_out_pairs_and_keeps_the_metrics(tiny_model, tmp_path,
                                                                       objective):
    model_dir = tiny_model("qwen2")
    data = write_pairs(tmp_path / "pairs.jsonl")
    before = sha256_file(data)
    ev = _train(model_dir, data, objective, "--objective", objective, "--iters", "10",
                "--eval-every", "5")
    valid = [e for e in ev if e["event"] == "metrics" and e["split"] == "valid"]
    train = [e for e in ev if e["event"] == "metrics" and e["split"] == "train"]
    assert [e["iteration"] for e in valid] == [0, 5, 10]
    assert len(train) == 10
    first, last = valid[0]["values"], valid[-1]["values"]
    if objective == "dpo":  # the adapter starts at zero: the policy is the reference
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
        assert first["reward_accuracy"] is None and first["reward_ties"] == 4
    else:
        assert first["odds_ratio"] > 0 and "nll" in first
    assert last["reward_accuracy"] >= 0.9, valid   # 4 held-out pairs
    assert last["reward_margin"] > first["reward_margin"]
    m = library.get_adapter(objective).manifest
    assert m["settings"]["objective"] == objective and m["dataset"]["schema"] == "preference"
    assert m["metrics_history"]["valid"][-1] == [10, last]
    assert [s for s, _ in m["metrics_history"]["train"]] == list(range(1, 11))
    assert sha256_file(data) == before
    if objective == "orpo":  # ORPO's SFT half: the greedy answer takes the chosen style
        out = run_tailor("generate", "--adapter", "orpo", "--prompt",
                         "Tell me about the book number 99.", "--max-tokens", "8")
        assert out.returncode == 0, out.stderr[-2000:]
        assert "mountain" in out.stdout, out.stdout


def test_a_dpo_adapter_fuses_and_exports_unchanged(tiny_model, tmp_path):
    model_dir = tiny_model("llama3")
    data = write_pairs(tmp_path / "pairs.jsonl", n=16)
    _train(model_dir, data, "d", "--objective", "dpo", "--iters", "3", "--eval-every", "0")
    fused = run_tailor("fuse", "--adapter", "d", "--out", str(tmp_path / "fused"), "--quiet")
    assert fused.returncode == 0, fused.stderr[-2000:]
    gguf = run_tailor("export", "--adapter", "d", "--out", str(tmp_path / "d.gguf"), "--quiet")
    assert gguf.returncode == 0, gguf.stderr[-2000:]
    assert (tmp_path / "d.gguf").stat().st_size > 0


def test_init_adapter_starts_dpo_from_an_sft_adapter_and_is_recorded(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    sft = write_toy_chat(tmp_path / "chat.jsonl", n=16, answer=CHOSEN)
    _train(model_dir, sft, "sft", "--iters", "6", "--eval-every", "0")
    ev = _train(model_dir, write_pairs(tmp_path / "pairs.jsonl", n=16), "dpo",
                "--objective", "dpo", "--init-adapter", "sft", "--iters", "2",
                "--eval-every", "0")
    first = next(e for e in ev if e["event"] == "metrics" and e["split"] == "valid")["values"]
    # the policy starts as the SFT adapter, the reference is the base: no longer a tie
    assert first["reward_ties"] == 0 and first["loss"] != pytest.approx(math.log(2), abs=1e-4)
    m = library.get_adapter("dpo").manifest
    sft_file = library.get_adapter("sft").path / "adapters.safetensors"
    assert m["init_adapter"]["name"] == "sft"
    assert m["init_adapter"]["sha256"] == sha256_file(sft_file)
    assert m["settings"]["init_adapter"] == "sft"


@pytest.mark.parametrize("args, data_kind, expected", [
    (["--objective", "dpo"], "chat", "--objective dpo needs preference pairs"),
    ([], "pairs", "this dataset holds preference pairs"),
    (["--objective", "orpo", "--pack"], "pairs", "orpo scores whole answers: drop --pack"),
    (["--objective", "dpo", "--init-adapter", "nope"], "pairs", "nope"),
])
def test_mismatched_objective_and_data_are_refused(tiny_model, tmp_path, args, data_kind,
                                                   expected):
    data = (write_toy_chat(tmp_path / "d.jsonl", n=12) if data_kind == "chat"
            else write_pairs(tmp_path / "d.jsonl", n=12))
    out = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(data),
                     "--name", "x", "--iters", "2", *args, "--quiet")
    assert out.returncode != 0
    assert expected in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


KILL_ARGS = ["--objective", "dpo", "--iters", "12", "--save-every", "4", "--eval-every", "4",
             "--learning-rate", "1e-3", "--rank", "4", "--dropout", "0.1", "--batch-size", "2",
             "--grad-accumulation", "2", "--baseline-prompts", "0", "--quiet", "--events", "-"]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_sigkill_then_resume_equals_an_uninterrupted_dpo_run(tiny_model, tmp_path, method):
    """full: the resumed run reloads the reference kept before step 1 (the trained weights
    could not give it again)."""
    model_dir = tiny_model("qwen2")
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    args = [*KILL_ARGS, "--method", method]
    straight = run_tailor("train", "--model", str(model_dir), "--data", str(data), "--name",
                          "straight", *args)
    assert straight.returncode == 0, straight.stderr[-2000:]
    proc = subprocess.Popen(tailor_cmd("train", "--model", str(model_dir), "--data", str(data),
                                       "--name", "killed", *args),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ})
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line)["event"] == "checkpoint" and \
                json.loads(line)["iteration"] >= 4:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert library.get_adapter("killed").manifest["status"] == "running"
    resumed = run_tailor("train", "--resume", "killed", "--quiet", "--events", "-")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    steps = [e["iteration"] for e in events_of(resumed.stdout) if e["event"] == "metrics"
             and e["split"] == "train"]
    assert steps and steps[0] > 4  # it continued
    a = mx.load(str(library.get_adapter("straight").path / "adapters.safetensors"))
    b = mx.load(str(library.get_adapter("killed").path / "adapters.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), rtol=1e-4, atol=1e-6,
                                   err_msg=k)
    ma, mb = (library.get_adapter(n).manifest for n in ("straight", "killed"))
    assert [s for s, _ in mb["metrics_history"]["train"]] == list(range(1, 13))
    for (sa, va), (sb, vb) in zip(ma["metrics_history"]["train"],
                                  mb["metrics_history"]["train"]):
        assert sa == sb and va["loss"] == pytest.approx(vb["loss"], rel=1e-4, abs=1e-6)
    assert ma["metrics_history"]["valid"][-1][1]["reward_margin"] == pytest.approx(
        mb["metrics_history"]["valid"][-1][1]["reward_margin"], rel=1e-4)


def test_stop_on_stdin_keeps_the_metrics_and_resumes_to_the_end(tiny_model, tmp_path):
    data = write_pairs(tmp_path / "pairs.jsonl", n=24)
    proc = subprocess.Popen(tailor_cmd("train", "--model", str(tiny_model("qwen2")), "--data",
                                       str(data), "--name", "stopped", *KILL_ARGS),
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})
    for line in proc.stdout:
        if line.startswith("{") and json.loads(line)["event"] == "metrics" and \
                json.loads(line)["iteration"] >= 3:
            break
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    m = library.get_adapter("stopped").manifest
    assert m["status"] == "cancelled"
    stopped_at = m["steps"]
    # every step trained so far has its metrics in the record, the stopped one included
    assert [s for s, _ in m["metrics_history"]["train"]] == list(range(1, stopped_at + 1))
    resumed = run_tailor("train", "--resume", "stopped", "--quiet", "--events", "-")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    m = library.get_adapter("stopped").manifest
    assert [s for s, _ in m["metrics_history"]["train"]] == list(range(1, 13))
