"""Stop and continue: SIGKILL, `stop` on stdin, refused resumes, non-finite loss."""
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
from engine.events import Checkpoint, ListReporter, TailorError
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree

from .conftest import REPO, events_of, run_tailor, tailor_cmd, write_toy_chat

# dropout > 0 and grad accumulation so RNG and micro-batch position both matter on resume
ARGS = ["--iters", "24", "--save-every", "4", "--eval-every", "8", "--learning-rate", "2e-3",
        "--rank", "4", "--dropout", "0.1", "--batch-size", "2", "--grad-accumulation", "2",
        "--quiet", "--events", "-"]


def _weights(name: str) -> dict[str, np.ndarray]:
    w = mx.load(str(library.get_adapter(name).path / "adapters.safetensors"))
    return {k: np.array(v) for k, v in w.items()}


def _start(model_dir, data, name) -> subprocess.Popen:
    return subprocess.Popen(tailor_cmd("train", "--model", str(model_dir), "--data", str(data),
                                       "--name", name, *ARGS),
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})


def _read_until(proc: subprocess.Popen, kind: str, min_iteration: int = 0) -> dict:
    for line in proc.stdout:
        if line.startswith("{"):
            e = json.loads(line)
            if e["event"] == kind and e.get("iteration", 0) >= min_iteration:
                return e
            if e["event"] in ("finished", "failed"):
                pytest.fail(f"run ended before a {kind} event: {e}")
    pytest.fail(f"no {kind} event; stderr: {proc.stderr.read()}")


def test_sigkill_then_resume_equals_uninterrupted_run(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=40)
    straight = run_tailor("train", "--model", str(model_dir), "--data", str(data),
                          "--name", "straight", *ARGS)
    assert straight.returncode == 0, straight.stderr

    proc = _start(model_dir, data, "killed")
    first = _read_until(proc, "checkpoint", min_iteration=8)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed = library.get_adapter("killed")
    assert killed.manifest["status"] == "running"      # it never got to say otherwise
    assert os.path.isdir(first["path"])                 # the checkpoint survived the kill
    # and the folder still holds an adapter mlx-lm loads: the latest checkpoint's weights
    import mlx_lm
    mlx_lm.load(str(model_dir), adapter_path=str(killed.path))

    resumed = run_tailor("train", "--resume", "killed", "--quiet", "--events", "-")
    assert resumed.returncode == 0, resumed.stderr
    ev = events_of(resumed.stdout)
    started = next(e for e in ev if e["event"] == "started")
    assert started["info"]["resumed_from"]
    first_step = next(e for e in ev if e["event"] == "step")
    assert first_step["iteration"] > 8                  # it continued, it did not restart
    a, b = _weights("straight"), _weights("killed")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
    ma, mb = library.get_adapter("straight").manifest, library.get_adapter("killed").manifest
    assert mb["status"] == "finished"
    np.testing.assert_allclose([l for _, l in ma["loss_history"]["train"]],
                               [l for _, l in mb["loss_history"]["train"]], rtol=1e-4)


def test_stop_on_stdin_leaves_resumable_checkpoint(tiny_model, tmp_path):
    model_dir = tiny_model("llama3")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=40)
    proc = _start(model_dir, data, "stopped")
    _read_until(proc, "step", min_iteration=5)
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    ev = events_of(out)
    cancelled = [e for e in ev if e["event"] == "cancelled"]
    assert cancelled and "resume" in cancelled[0]["message"]
    assert os.path.isdir(cancelled[0]["checkpoint"])
    info = library.get_adapter("stopped")
    assert info.manifest["status"] == "cancelled"
    stopped_at = info.manifest["steps"]
    saved = mx.load(os.path.join(cancelled[0]["checkpoint"], "adapters.safetensors"))
    kept = mx.load(str(info.path / "adapters.safetensors"))  # the stopped state, loadable
    assert all(np.array_equal(np.array(saved[k]), np.array(kept[k])) for k in saved)
    assert 5 <= stopped_at < 24
    resumed = run_tailor("train", "--resume", "stopped", "--quiet", "--events", "-")
    assert resumed.returncode == 0, resumed.stderr
    steps = [e["iteration"] for e in events_of(resumed.stdout) if e["event"] == "step"]
    assert steps == list(range(stopped_at + 1, 25))
    assert library.get_adapter("stopped").manifest["status"] == "finished"


def _small(**kw):
    base = dict(iters=12, save_every=4, eval_every=0, learning_rate=2e-3, rank=4,
                batch_size=2)
    return make_config(**{**base, **kw})


def test_resume_with_changed_dataset_is_refused(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    other = write_toy_chat(tmp_path / "other.jsonl", n=24, answer="horse wood")
    train_adapter(str(model_dir), data, "run", _small())
    folder = library.get_adapter("run").path
    before = snapshot_tree(folder)
    r = run_tailor("train", "--resume", "run", "--data", str(other), "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"]
    assert "dataset changed" in failed[0]["message"]
    assert snapshot_tree(folder) == before
    # editing the original file in place is noticed the same way
    with open(data, "a", encoding="utf-8") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "x"},
                                         {"role": "assistant", "content": "y"}]}) + "\n")
    with pytest.raises(TailorError, match="dataset changed"):
        train_adapter(None, None, "run", resume=True)
    assert snapshot_tree(folder) == before


def test_resume_with_changed_adapter_shape_is_refused(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    train_adapter(str(tiny_model("qwen2")), data, "run", _small())
    before = snapshot_tree(library.get_adapter("run").path)
    with pytest.raises(TailorError, match=r"changed settings: rank 4 -> 8"):
        train_adapter(None, None, "run", _small(rank=8), resume=True)
    assert snapshot_tree(library.get_adapter("run").path) == before


def test_non_finite_loss_stops_and_keeps_last_finite_checkpoint(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)

    def poison(micro, batch):  # the injected fault: NaN token weights from micro-batch 6 on
        if micro >= 6:
            batch.weight = batch.weight * float("nan")
        return batch

    assert_non_finite_stop_keeps_checkpoint_4(tiny_model("qwen2"), data, _small(), poison)


def assert_non_finite_stop_keeps_checkpoint_4(model_dir, data, cfg, poison) -> None:
    """Train with ``poison`` (NaN from micro-batch 6 on, 12 steps saved every 4): the run
    stops at step 7, failed, keeping step 4's finite checkpoint as its adapter (shared with
    tests/preference/test_preference_loop.py: DPO and ORPO through the same loop)."""
    rep = ListReporter()
    with pytest.raises(TailorError) as err:
        train_adapter(str(model_dir), data, "nan", cfg, report=rep, batch_hook=poison)
    assert "became nan at step 7" in err.value.message
    assert "step-0000004" in err.value.message
    info = library.get_adapter("nan")
    assert info.manifest["status"] == "failed"
    assert [c.iteration for c in rep.of(Checkpoint)] == [4]
    kept = mx.load(str(info.path / "checkpoints" / "step-0000004" / "adapters.safetensors"))
    final = mx.load(str(info.path / "adapters.safetensors"))
    for k, v in kept.items():
        assert np.isfinite(np.array(v)).all()
        np.testing.assert_array_equal(np.array(v), np.array(final[k]))
    assert all(math.isfinite(l) for _, l in info.manifest["loss_history"]["train"])


def test_sigint_cancels_with_a_checkpoint_and_exit_130(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=40)
    proc = _start(tiny_model("qwen2"), data, "interrupted")
    _read_until(proc, "step", min_iteration=3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    cancelled = [e for e in events_of(out) if e["event"] == "cancelled"][0]
    assert "interrupted (Ctrl-C)" in cancelled["message"] or "stopped at step" in \
        cancelled["message"]
    assert os.path.isdir(cancelled["checkpoint"])
    assert library.get_adapter("interrupted").manifest["status"] == "cancelled"


def test_resume_on_another_base_model_is_refused(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    train_adapter(str(tiny_model("qwen2")), data, "run", _small())
    before = snapshot_tree(library.get_adapter("run").path)
    with pytest.raises(TailorError, match="base model differs"):
        train_adapter(str(tiny_model("qwen3")), None, "run", resume=True)
    assert snapshot_tree(library.get_adapter("run").path) == before


def test_event_stream_is_pure_json_lines(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    r = run_tailor("train", "--model", str(tiny_model("qwen2")), "--data", str(data),
                   "--name", "pure", "--iters", "3", "--quantize-base", "4", "--events", "-")
    assert r.returncode == 0, r.stderr
    kinds = [json.loads(line)["event"] for line in r.stdout.splitlines()]  # every line parses
    assert kinds[0] == "progress" and "started" in kinds and kinds[-1] == "finished"
    assert "step 3/3" in r.stderr  # the terminal view went to stderr


def test_resume_keeps_the_runs_data_split_and_refuses_a_changed_one(tiny_model, tmp_path):
    from engine.data import DataConfig

    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    train_adapter(str(tiny_model("qwen2")), data, "run", _small(),
                  data_config=DataConfig(split_seed=7, valid_fraction=0.25))
    m = library.get_adapter("run").manifest
    assert m["data_settings"]["split_seed"] == 7 and m["dataset"]["counts"]["valid"] == 6
    before = snapshot_tree(library.get_adapter("run").path)
    r = run_tailor("train", "--resume", "run", "--split-seed", "8", "--quiet", "--events", "-")
    assert r.returncode == 1
    assert "changed data settings: split_seed 7 -> 8" in events_of(r.stdout)[-1]["message"]
    assert snapshot_tree(library.get_adapter("run").path) == before
