"""Resume with changed settings (issue 13: --save-every, --report-every and --keep-checkpoints
were accepted on resume and silently ignored). One pure function merges the saved settings with
the flags given now: each of those three takes effect; any other is refused with the reason."""
from __future__ import annotations

import pytest

from engine import library
from engine.events import Checkpoint, ListReporter, Step, TailorError
from engine.train import checkpoint as ckpt
from engine.train.config import (RESUME_FIXED_REASON, RESUME_FREE, TrainConfig,
                                 make_config, merge_resume_config)
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree

from .conftest import events_of, run_tailor, write_toy_chat


def test_merge_applies_each_free_setting_and_leaves_the_saved_one_alone():
    saved = make_config(iters=12, save_every=4, report_every=1, keep_checkpoints=2)
    merged = merge_resume_config(saved, {"save_every": 2, "report_every": 3,
                                         "keep_checkpoints": 1, "rank": saved.rank}, "run")
    assert (merged.save_every, merged.report_every, merged.keep_checkpoints) == (2, 3, 1)
    assert (saved.save_every, saved.report_every, saved.keep_checkpoints) == (4, 1, 2)
    assert merged.to_dict() == {**saved.to_dict(), "save_every": 2, "report_every": 3,
                                "keep_checkpoints": 1}
    assert merge_resume_config(saved, {}, "run") == saved


def test_merge_refuses_every_other_setting_naming_it_and_why():
    saved = make_config(iters=12)
    with pytest.raises(TailorError) as e:
        merge_resume_config(saved, {"rank": 8, "iters": 24, "save_every": 2}, "run")
    msg = e.value.message
    assert msg.startswith("cannot resume 'run' with changed settings: ")
    assert "rank 16 -> 8 (it decides the adapter's shape" in msg
    assert "iters 12 -> 24 (it sets the run's length" in msg
    assert "--save-every, --keep-checkpoints, --report-every may change" in e.value.hint
    # every setting has its reason, or is free (a new setting must choose)
    names = {f for f in TrainConfig.__dataclass_fields__}
    assert names == set(RESUME_FIXED_REASON) | set(RESUME_FREE)
    with pytest.raises(TailorError, match="save_every = 0 is below the minimum 1"):
        merge_resume_config(saved, {"save_every": 0}, "run")


@pytest.fixture
def stopped_run(tiny_model, tmp_path):
    """A 12-step run stopped at its step-4 checkpoint (save every 4, report every step)."""
    data = write_toy_chat(tmp_path / "toy.jsonl", n=24)
    cfg = make_config(iters=12, save_every=4, report_every=1, keep_checkpoints=2, eval_every=0,
                      learning_rate=2e-3, rank=4, batch_size=2)
    from engine.events import Cancelled, CancelToken

    cancel = CancelToken()

    def stop_at_first_checkpoint(event):
        if isinstance(event, Checkpoint):
            cancel.cancel("test stop")

    with pytest.raises(Cancelled):
        train_adapter(str(tiny_model("qwen2")), data, "run", cfg,
                      report=stop_at_first_checkpoint, cancel=cancel)
    assert library.get_adapter("run").manifest["steps"] == 4
    return data


def test_each_resume_flag_takes_effect(stopped_run):
    r = run_tailor("train", "--resume", "run", "--save-every", "2", "--report-every", "3",
                   "--keep-checkpoints", "1", "--quiet", "--events", "-")
    assert r.returncode == 0, r.stderr
    events = events_of(r.stdout)
    # --report-every 3: steps 6, 9 and the last (were 5, 6, ..., 12)
    assert [e["iteration"] for e in events if e["event"] == "step"] == [6, 9, 12]
    # --save-every 2: checkpoints at 6, 8, 10 and the end (were 8 and the end)
    assert [e["iteration"] for e in events if e["event"] == "checkpoint"] == [6, 8, 10, 12]
    # --keep-checkpoints 1: one step checkpoint left (was 2)
    folder = library.get_adapter("run").path
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step-0000012"]
    # and a later resume starts from the new values
    state = ckpt.latest_checkpoint(folder).state["config"]
    assert (state["save_every"], state["report_every"], state["keep_checkpoints"]) == (2, 3, 1)
    started = [e for e in events if e["event"] == "started"][0]
    assert started["config"]["save_every"] == 2


def test_each_resume_flag_takes_effect_through_the_api(stopped_run):
    saved = ckpt.latest_checkpoint(library.get_adapter("run").path).state["config"]
    cfg = TrainConfig.from_dict({**saved, "report_every": 4, "save_every": 3})
    events = ListReporter()
    train_adapter(None, None, "run", cfg, resume=True, report=events)
    assert [e.iteration for e in events.of(Step)] == [8, 12]
    assert [e.iteration for e in events.of(Checkpoint)] == [6, 9, 12]


def test_a_setting_resume_cannot_change_is_refused_with_the_reason(stopped_run):
    folder = library.get_adapter("run").path
    before = snapshot_tree(folder)
    r = run_tailor("train", "--resume", "run", "--learning-rate", "1e-3", "--save-every", "2",
                   "--quiet", "--events", "-")
    assert r.returncode == 1
    failed = [e for e in events_of(r.stdout) if e["event"] == "failed"][0]
    assert ("learning_rate 0.002 -> 0.001 (it is part of the optimisation the checkpoint is "
            "partway through)") in failed["message"]
    assert "Traceback" not in r.stderr
    assert snapshot_tree(folder) == before
