"""The bundled sample dataset (demo and first run): reproducible, clean under every template."""
from __future__ import annotations

import importlib.util

from engine.data import DataConfig, prepare_dataset
from engine.paths import RESOURCES

SAMPLES = RESOURCES / "samples"


def load_generator():
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_sample_is_what_the_script_generates():
    gen = load_generator()
    rows = gen.examples()
    assert (SAMPLES / "chat_sample.jsonl").read_text(encoding="utf-8") == gen.as_jsonl(rows)
    assert 200 <= len(rows) <= 400
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    assert all(a.endswith(gen.SIGN_OFF) for a in answers)  # the one style the model learns
    assert any(len(r["messages"]) > 2 for r in rows)  # some multi-turn conversations


def test_sample_imports_cleanly_with_every_tiny_model(any_tiny_model, tokenizer):
    kind, _folder = any_tiny_model
    prepared = prepare_dataset(SAMPLES / "chat_sample.jsonl", tokenizer(kind),
                               DataConfig(min_examples=4))
    rep = prepared.report
    assert rep.problems == [] and rep.duplicates == 0
    assert rep.schema == "chat" and rep.train_examples + rep.valid_examples == 240
    assert rep.train_stats.length_max < 256  # short: quick to train on a laptop
