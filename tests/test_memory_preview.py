"""Issue 13, one memory model: the Train page's preview (app/estimate.py) is engine/train/memory.py
fed the counts the run will see, so for the same settings and data its figure is the one
`tailor train` plans (the Started event's info)."""
from __future__ import annotations

import json

import pytest

from app.estimate import estimate, read_model_config
from engine.cli import main

from .train.conftest import write_toy_chat

CASES = {
    "lora": {"method": "lora", "rank": 4, "batch_size": 2},
    "dora, attention, last block, checkpointing": {
        "method": "dora", "rank": 8, "targets": "attention", "num_layers": 1, "batch_size": 2,
        "grad_checkpoint": True},
    "full, last block": {"method": "full", "num_layers": 1, "batch_size": 2},
    "qlora, quantized on load": {"method": "lora", "rank": 4, "batch_size": 2,
                                 "quantize_base": 4},
}


def _events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _argv(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        out += [flag] if value is True else [flag, str(value)]
    return out


@pytest.fixture(scope="module")
def longest(tiny_model, tmp_path_factory):
    """The data check's longest training example, as the Data page has it."""
    folder = tmp_path_factory.mktemp("preview")
    data = write_toy_chat(folder / "toy.jsonl", n=12)
    events = folder / "check.jsonl"
    assert main(["data", "check", str(data), "--model", str(tiny_model("qwen2")),
                 "--events", str(events)]) == 0
    report = _events(events)[-1]["result"]
    return data, report["train_stats"]["length_max"]


@pytest.mark.parametrize("case", list(CASES))
def test_the_previews_peak_is_what_train_plans(case, tiny_model, longest, tmp_path):
    model = tiny_model("qwen2")
    data, length_max = longest
    settings = CASES[case]
    events = tmp_path / "train.jsonl"
    assert main(["train", "--model", str(model), "--data", str(data), "--name", "run",
                 "--iters", "1", "--eval-every", "0", *_argv(settings),
                 "--events", str(events)]) == 0
    started = next(e for e in _events(events) if e["event"] == "started")
    plan = started["info"]["memory"]

    preview = estimate(read_model_config(model), settings, longest=length_max)
    assert preview.total_bytes == plan["total_bytes"]
    assert preview.memory == {k: plan[k] for k in preview.memory}  # each part, too
    assert preview.trainable_params == started["info"]["parameters"]["trainable"]
    # without the data's lengths, max_seq_length is the length: an upper bound
    assert estimate(read_model_config(model), settings).total_bytes > plan["total_bytes"]


def test_the_preview_says_when_it_is_an_upper_bound(tiny_model):
    from app.estimate import longest_in

    cfg = read_model_config(tiny_model("qwen2"))
    report = {"train_stats": {"length_max": 40}}
    assert longest_in(report) == 40 and longest_in(None) is None and longest_in({}) is None
    bound = estimate(cfg, {"max_seq_length": 512}).summary()
    assert "· up to " in bound and "(examples of 512 tokens; the dataset's own lengths " in bound
    exact = estimate(cfg, {"max_seq_length": 512}, longest=longest_in(report))
    assert exact.length == 40 and "· about " in exact.summary() and "up to" not in exact.summary()
    # engine/train/estimate.py's rule: over 80% of the machine may not fit
    assert exact.fits(int(exact.total_bytes / 0.8) + 1)
    assert not exact.fits(int(exact.total_bytes / 0.8) - 1)
    assert "more than this Mac can spare" in exact.summary(int(exact.total_bytes / 0.8) - 1)
