"""The run's baseline (engine/evaluate/baseline.py, issue 15): before the first training step
the base model's validation loss and its greedy answers to a seeded sample of held-out prompts
are in the run record; they are the base's own answers; resume never recomputes them; 0
disables it; a stop during it ends the run as cancelled."""
from __future__ import annotations

import json

import pytest

from engine import library
from engine.events import Cancelled, CancelToken, ListReporter, Progress
from engine.evaluate.generation import greedy_answers
from engine.models import load_model
from engine.train.config import TrainConfig, make_config
from engine.train.run import train_adapter
from tests.train.conftest import write_toy_chat


@pytest.fixture
def toy_data(tmp_path):
    return write_toy_chat(tmp_path / "toy.jsonl")


def _cfg(**kw):
    return make_config(**{"iters": 3, "eval_every": 0, "rank": 4, "batch_size": 2,
                          "learning_rate": 1e-3, "save_every": 1, **kw})


def test_the_baseline_is_in_the_record_before_step_1_and_is_the_base_s_answers(
        tiny_model, toy_data):
    model_dir = tiny_model("qwen2")
    cancel = CancelToken()
    seen_before_step_1 = []

    def stop_at_step_1(micro, batch):
        # called before micro-batch 0 runs: the record on disk already has the baseline
        seen_before_step_1.append(library.get_adapter("b").manifest.get("baseline"))
        cancel.cancel()
        return batch

    events = ListReporter()
    with pytest.raises(Cancelled):
        train_adapter(str(model_dir), toy_data, "b", _cfg(baseline_prompts=4), report=events,
                      cancel=cancel, batch_hook=stop_at_step_1)
    manifest = library.get_adapter("b").manifest
    assert manifest["status"] == "cancelled" and manifest["steps"] == 1
    baseline = manifest["baseline"]
    assert seen_before_step_1 == [baseline]
    assert baseline["type"] == "train.baseline" and baseline["seed"] == 0
    # 4 of the validation split's prompts, seeded, each with its reference and tokens
    assert len(baseline["prompts"]) == min(4, manifest["dataset"]["counts"]["valid"])
    for p in baseline["prompts"]:
        assert p["prompt"].endswith("<|im_start|>assistant\n"), p["prompt"]
        assert p["reference"] == "mountain river fish"
        # the prompt is the one on the source line, rendered as trained
        line = int(p["source"].rsplit(":", 1)[1])
        question = json.loads(toy_data.read_text().splitlines()[line - 1])["messages"][0]
        assert question["content"] in p["prompt"]
    assert baseline["max_tokens"] <= 64
    # the base model loaded alone answers exactly what the record holds
    model, tokenizer, _ = load_model(model_dir)
    alone = greedy_answers(model, tokenizer, [p["prompt_tokens"] for p in baseline["prompts"]],
                           max_tokens=baseline["max_tokens"])
    assert [a.token_ids for a in alone] == [p["tokens"] for p in baseline["prompts"]]
    assert [a.text.strip() for a in alone] == [p["answer"] for p in baseline["prompts"]]
    # its validation loss is the run's own step-0 validation (the same batches and mask)
    step0 = [v for s, v in manifest["loss_history"]["valid"] if s == 0]
    assert step0 and baseline["val_loss"] == pytest.approx(step0[0], rel=1e-5)
    assert any(isinstance(e, Progress) and e.stage == "baseline" for e in events.events)


def test_resume_keeps_the_first_baseline_and_does_not_recompute_it(tiny_model, toy_data):
    model_dir = tiny_model("qwen2")
    cancel = CancelToken()

    def stop(micro, batch):
        cancel.cancel()
        return batch

    with pytest.raises(Cancelled):
        train_adapter(str(model_dir), toy_data, "r", _cfg(baseline_prompts=3), cancel=cancel,
                      batch_hook=stop)
    first = library.get_adapter("r").manifest["baseline"]
    events = ListReporter()
    info = train_adapter(None, None, "r", resume=True, report=events)
    assert info.manifest["status"] == "finished"
    assert info.manifest["baseline"] == first
    assert not any(isinstance(e, Progress) and e.stage == "baseline" for e in events.events)


def test_baseline_prompts_0_disables_it_and_the_setting_has_help(tiny_model, toy_data):
    info = train_adapter(str(tiny_model("qwen2")), toy_data, "off", _cfg(baseline_prompts=0))
    assert "baseline" not in info.manifest
    help_text = TrainConfig.__dataclass_fields__["baseline_prompts"].metadata["help"]
    assert "held-out prompts" in help_text and "0: off" in help_text


def test_a_stop_during_the_baseline_ends_the_run_as_cancelled(tiny_model, toy_data):
    cancel = CancelToken()

    def stop_when_the_baseline_starts(event):
        if isinstance(event, Progress) and event.stage == "baseline":
            cancel.cancel()

    steps = []
    with pytest.raises(Cancelled):
        train_adapter(str(tiny_model("qwen2")), toy_data, "c", _cfg(baseline_prompts=4),
                      report=stop_when_the_baseline_starts, cancel=cancel,
                      batch_hook=lambda m, b: steps.append(m) or b)
    manifest = library.get_adapter("c").manifest
    assert manifest["status"] == "cancelled"
    assert steps == []  # no training step ran
    assert "baseline" not in manifest


def test_resume_with_another_baseline_size_is_refused_saying_why(tiny_model, toy_data):
    from engine.events import TailorError
    from engine.train.config import merge_resume_config

    saved = _cfg(baseline_prompts=3)
    with pytest.raises(TailorError, match=r"baseline_prompts 3 -> 8 \(the baseline is "
                                          r"recorded once, before the run's first step"):
        merge_resume_config(saved, {"baseline_prompts": 8}, "r")
