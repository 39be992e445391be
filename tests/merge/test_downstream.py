"""Issue 20: a merge of two adapters the engine trained goes down every path any adapter does
(mlx-lm load, fuse, GGUF export verified in llama.cpp, adapter-only GGUF), and `tailor merge`
on the command line streams typed events."""
from __future__ import annotations

import json
import subprocess
import sys

import mlx_lm
import pytest

from engine.events import Failed, decode_event
from engine.export.gguf_export import export_gguf
from engine.fuse import fuse_adapter
from engine.merge import MergeConfig, merge_adapters
from engine.results import MergeResult
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import REPO, snapshot_tree
from tests.export.helpers import failed_checks
from tests.train.conftest import write_toy_chat

pytestmark = [pytest.mark.slow]


@pytest.fixture
def trained(tiny_model, tmp_path):
    """Two adapters trained by the engine on different answers: rank 4 LoRA, and rank 8
    rsLoRA on the attention only."""
    base = tiny_model("qwen2")
    quick = {"iters": 6, "eval_every": 0, "batch_size": 2, "learning_rate": 1e-3}
    train_adapter(str(base), write_toy_chat(tmp_path / "one.jsonl", answer="red green"),
                  "one", make_config(rank=4, **quick))
    train_adapter(str(base), write_toy_chat(tmp_path / "two.jsonl", answer="blue sky"),
                  "two", make_config(rank=8, rslora=True, targets="attention", **quick))
    return base


def test_a_merged_adapter_fuses_and_exports_like_any_other(trained, tmp_path, tailor_home):
    base = trained
    before = snapshot_tree(tailor_home / "adapters")
    result = merge_adapters(["one", "two"], MergeConfig(method="ties", weights=[0.6, 0.4],
                                                        density=0.5), "both")
    for name in ("one", "two"):  # the parents are untouched
        assert {k: v for k, v in snapshot_tree(tailor_home / "adapters").items()
                if k.startswith(name + "/")} == \
            {k: v for k, v in before.items() if k.startswith(name + "/")}
    mlx_lm.load(str(base), adapter_path=result.path)  # loads as it is
    fused = fuse_adapter("both", tmp_path / "fused")
    assert (fused / "config.json").exists()
    whole = export_gguf("both", tmp_path / "both.gguf", "f32")
    assert whole.verification["passed"], failed_checks(whole.verification)
    lora = export_gguf("both", tmp_path / "both-lora.gguf", "f32", adapter_only=True)
    assert lora.verification["passed"], failed_checks(lora.verification)


def test_cli_merge_streams_events_and_refuses_a_taken_name(trained, tmp_path, tailor_home):
    env = {**__import__("os").environ, "TAILOR_HOME": str(tailor_home)}
    argv = [sys.executable, "-m", "engine", "merge", "one", "two", "--method", "linear",
            "--rank", "4", "--weights", "0.5,0.5", "--name", "mix", "--events", "-", "--quiet"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    kinds = [json.loads(line)["event"] for line in proc.stdout.splitlines()]
    events = [decode_event(line) for line in proc.stdout.splitlines()]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "progress" in kinds
    result = events[-1].result
    assert isinstance(result, MergeResult) and result.adapter == "mix"
    assert result.parents == ["one", "two"] and result.weights == [0.5, 0.5]
    assert 0 < result.min_energy_kept <= 1 and "keeps" in proc.stderr
    manifest = json.loads((tailor_home / "adapters/mix/manifest.json").read_text())
    assert manifest["merge"]["method"] == "linear" and manifest["status"] == "finished"
    again = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=300,
                           env=env)
    assert again.returncode == 1
    failed = [decode_event(line) for line in again.stdout.splitlines()][-1]
    assert isinstance(failed, Failed) and failed.code == "name_taken"
    assert "already exists" in failed.message
