"""The forgetting probe (engine/evaluate/probe.py, issue 15) flags an adapter trained to
overwrite everything and passes a gentle one.

A random tiny model knows none of the probe's answers, so nothing could be forgotten; the
test first gives one general skills: a full fine-tune on the probe's own prompts, fused into a
model folder (the "base" both adapters are trained on). Then one adapter learns to answer
every question with one fixed sentence (it forgets), and one takes four small steps (it does
not)."""
from __future__ import annotations

import json

import pytest

from engine.events import Job, ListReporter, Progress, TailorError
from engine.evaluate.probe import MAX_LOGPROB_DROP, PROBE_FILE, forgetting_probe, read_probe
from engine.fuse import fuse_adapter
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree
from tests.train.conftest import write_toy_chat

FIXED = "I only ever say this one fixed sentence."
MAX_TOKENS = 24  # the probe's answers are short; the fixed sentence is 9 to 12 tokens


def _probe_as_chat(path):
    with open(path, "w", encoding="utf-8") as f:
        for item in read_probe():
            f.write(json.dumps({"messages": [{"role": "user", "content": item.prompt},
                                             {"role": "assistant", "content": item.reference}]})
                    + "\n")
    return path


@pytest.fixture(scope="module")
def knowing_base(tmp_path_factory, tiny_model):
    """A tiny qwen2 that learned the probe's answers (60 full fine-tuning steps, ~10 s)."""
    import os

    root = tmp_path_factory.mktemp("knowing")
    old = os.environ.get("TAILOR_HOME")
    os.environ["TAILOR_HOME"] = str(root / "home")
    try:
        train_adapter(str(tiny_model("qwen2")), _probe_as_chat(root / "probe.jsonl"), "know",
                      make_config(method="full", iters=60, eval_every=0, batch_size=8,
                                  learning_rate=1e-3, warmup=0.0, baseline_prompts=0))
        return fuse_adapter("know", root / "base")
    finally:
        if old is None:
            os.environ.pop("TAILOR_HOME", None)
        else:
            os.environ["TAILOR_HOME"] = old


def _train(base, data, name, **settings):
    return train_adapter(str(base), data, name, make_config(
        eval_every=0, batch_size=4, rank=8, baseline_prompts=0, **settings))


def test_probe_flags_an_adapter_that_overwrites_every_answer(knowing_base, tmp_path):
    data = write_toy_chat(tmp_path / "fixed.jsonl", n=48, answer=FIXED)
    _train(knowing_base, data, "overwrite", iters=30, learning_rate=3e-3)
    before = snapshot_tree(knowing_base)
    events = ListReporter()
    r = forgetting_probe("overwrite", Job("probe", events), max_tokens=MAX_TOKENS)

    assert not r.passed
    assert r.verdict.startswith("forgetting probe: FLAGGED")
    assert f"a fall over {MAX_LOGPROB_DROP:.3f} = ln 2" in r.verdict  # the threshold it used
    assert r.logprob_drop > MAX_LOGPROB_DROP
    assert r.base_mean_logprob > r.adapter_mean_logprob
    assert len(r.items) == len(read_probe()) >= 40
    assert {i.category for i in r.items} == {"arithmetic", "facts", "instruction", "format",
                                             "refusal"}
    # every answer became the fixed sentence, and the report shows them beside the base's
    assert r.changed_share > 0.9
    assert sum(i.adapter_answer == FIXED for i in r.items) > 0.75 * len(r.items)
    text = r.format_text(show=3)
    changed = [i for i in r.items if i.changed]
    assert f"greedy answers changed: {len(changed)} of {len(r.items)}" in text
    assert r.base_exact >= 8 and r.adapter_exact == 0  # the skills it had are gone
    assert f"equal to the reference: base {r.base_exact}, adapter 0" in text
    worst = min(changed, key=lambda i: i.adapter_logprob - i.base_logprob)
    assert f"[{worst.id}] {worst.prompt!r}" in text and repr(FIXED) in text
    # progress went out, and the base model's folder is untouched
    assert events.of(Progress)
    assert snapshot_tree(knowing_base) == before
    assert r.probe_file == str(PROBE_FILE) and len(r.probe_sha256) == 64


def test_probe_passes_a_gentle_adapter(knowing_base, tmp_path):
    data = write_toy_chat(tmp_path / "fixed.jsonl", n=48, answer=FIXED)
    _train(knowing_base, data, "gentle", iters=4, learning_rate=1e-4)
    r = forgetting_probe("gentle", Job("probe"), max_tokens=MAX_TOKENS)

    assert r.passed, r.format_text()
    assert r.verdict.startswith("forgetting probe: PASSED")
    assert abs(r.logprob_drop) < 0.1 * MAX_LOGPROB_DROP
    # a few answers of this barely-trained base sit on near-ties and flip (7 of 44 measured):
    # why the verdict rests on the log-likelihood, not on changed answers
    assert r.changed_share < 0.5
    assert r.note == ""  # this base knows the answers
    # the base's answers are the ones it learned: the probe measures real skills here
    assert sum(i.base_answer == i.reference for i in r.items) >= 8  # 13 of 44 measured
    assert r.base_mean_logprob > -3.0  # -2.3 measured; the random model's is -44


def test_a_bad_probe_line_is_named_with_its_line(tmp_path):
    bad = tmp_path / "probe.jsonl"
    bad.write_text('{"id": "a", "category": "x", "prompt": "Hi", "reference": "Hello"}\n'
                   '{"id": "b", "category": "x", "prompt": "Hi"}\n', encoding="utf-8")
    with pytest.raises(TailorError, match=rf"{bad}:2: not a probe item"):
        read_probe(bad)


def test_the_probe_of_an_adapter_that_does_not_exist_says_so():
    with pytest.raises(TailorError, match="no adapter named 'nope'"):
        forgetting_probe("nope", Job("probe"))


def test_a_stop_during_the_probe_ends_it(tiny_model, tmp_path):
    from engine.events import Cancelled, CancelToken

    _train(tiny_model("qwen2"), write_toy_chat(tmp_path / "t.jsonl"), "s", iters=2,
           learning_rate=1e-4)
    cancel = CancelToken()
    seen = []

    def stop_after_a_few(event):
        if isinstance(event, Progress):
            seen.append(event)
            if len(seen) == 5:
                cancel.cancel()

    with pytest.raises(Cancelled):
        forgetting_probe("s", Job("probe", stop_after_a_few, cancel), max_tokens=MAX_TOKENS)
    assert len(seen) < 40  # it stopped at once, not after the 88 measurements
