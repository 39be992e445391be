"""The training memory estimate sizes a preference pair's rows by the longer of its two sides:
a rejected answer longer than every chosen one is a row the step computes too (before, only the
chosen side's length was counted, so such a set was underestimated)."""
from __future__ import annotations

import json

from engine.events import ListReporter, Started
from engine.train.config import make_config
from engine.train.run import train_adapter

SHORT = "Yes."
LONG = " ".join(["This answer rambles on and on about nothing in particular"] * 12)


def _write(path, chosen: str, rejected: str, n: int = 12):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question number {i}?", "chosen": chosen,
                                "rejected": rejected}) + "\n")
    return path


def _memory(model_dir, data, name):
    rep = ListReporter()
    cfg = make_config(objective="dpo", iters=1, rank=4, batch_size=2, eval_every=0,
                      baseline_prompts=0)
    train_adapter(str(model_dir), data, name, cfg, report=rep)
    return rep.of(Started)[0].info["memory"]


def test_a_rejected_answer_longer_than_every_chosen_one_is_counted(tiny_model, tmp_path):
    model_dir = tiny_model("qwen2")
    long_rejected = _memory(model_dir, _write(tmp_path / "a.jsonl", SHORT, LONG), "long-rej")
    long_chosen = _memory(model_dir, _write(tmp_path / "b.jsonl", LONG, SHORT), "long-cho")
    # the same pairs with the sides swapped: the same rows, so the same estimate
    assert long_rejected["longest_example_tokens"] == long_chosen["longest_example_tokens"]
    assert long_rejected["longest_example_tokens"] > 60  # the long answer, not "Yes."
    assert long_rejected["activation_bytes"] == long_chosen["activation_bytes"]
