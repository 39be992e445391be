"""Split, duplicates, leakage, length limits, statistics, progress and cancellation."""
from __future__ import annotations

import json
import statistics

import pytest

from engine.data import DataConfig, TokenStats, prepare_dataset
from engine.events import CancelToken, Cancelled, ListReporter, Progress, TailorError
from tests.data.conftest import chat, jsonl


def sources(examples):
    return [e.source for e in examples]


def test_split_is_seeded_deterministic_and_independent_of_the_tokenizer(write, tokenizer):
    path = write("s.jsonl", jsonl([chat(i) for i in range(50)]))
    a = prepare_dataset(path, tokenizer("qwen2"))
    b = prepare_dataset(path, tokenizer("llama2"))
    c = prepare_dataset(path, tokenizer("qwen2"), DataConfig(split_seed=1))
    assert len(a.valid) == 5 and len(a.train) == 45
    assert sources(a.valid) == sources(b.valid)
    assert sources(a.valid) != sources(c.valid)
    assert set(sources(a.train)).isdisjoint(sources(a.valid))
    assert sources(a.train) == sorted(sources(a.train), key=lambda s: int(s.split(":")[1]))


def test_small_dataset_gets_one_validation_example(write, tokenizer):
    prepared = prepare_dataset(write("s.jsonl", jsonl([chat(i) for i in range(3)])),
                               tokenizer(), DataConfig(valid_fraction=0.1))
    assert (len(prepared.train), len(prepared.valid)) == (2, 1)


def test_exact_duplicates_removed_and_counted_leakage_reported(write, tokenizer):
    rows = [chat(i) for i in range(20)] + [chat(3), chat(3), chat(7)]  # 3 exact duplicates
    rows += [chat(i, "Another answer.") for i in range(20)]  # same prompts, new answers
    prepared = prepare_dataset(write("d.jsonl", jsonl(rows)), tokenizer(),
                               DataConfig(valid_fraction=0.25))
    rep = prepared.report
    assert rep.duplicates == 3
    assert len(prepared.train) + len(prepared.valid) == 40
    keys = {tuple(e.tokens) for e in prepared.train}
    assert not any(tuple(e.tokens) in keys for e in prepared.valid)
    # Leakage: validation examples whose prompt also appears in training.
    train_prompts = {json.dumps(rows[int(s.split(":")[1]) - 1]["messages"][0])
                     for s in sources(prepared.train)}
    expected = sum(json.dumps(rows[int(s.split(":")[1]) - 1]["messages"][0]) in train_prompts
                   for s in sources(prepared.valid))
    assert rep.leakage == expected > 0
    assert "3 exact duplicates removed" in rep.format_text()

    kept = prepare_dataset(write("d2.jsonl", jsonl(rows)), tokenizer(), DataConfig(dedupe=False))
    assert kept.report.duplicates == 0 and len(kept.train) + len(kept.valid) == 43


def test_too_long_examples_truncated_or_dropped(write, tokenizer):
    long_answer = " ".join(["word"] * 200)
    rows = [chat(i) for i in range(6)] + [chat(100, long_answer), chat(101, long_answer)]
    path = write("l.jsonl", jsonl(rows))
    short = prepare_dataset(path, tokenizer(), DataConfig(max_seq_length=64, valid_fraction=0))
    assert short.report.truncated == 2 and short.report.dropped_too_long == 0
    assert max(len(e.tokens) for e in short.train) == 64
    assert len(short.train) == 8

    dropped = prepare_dataset(path, tokenizer(), DataConfig(max_seq_length=64, too_long="drop",
                                                            valid_fraction=0))
    assert dropped.report.dropped_too_long == 2 and len(dropped.train) == 6

    # Truncation that would leave nothing to train on drops the example instead.
    long_prompt = [{"messages": [{"role": "user", "content": long_answer},
                                 {"role": "assistant", "content": "ok"}]}] * 1
    path = write("p.jsonl", jsonl([chat(i) for i in range(4)] + long_prompt))
    prepared = prepare_dataset(path, tokenizer(), DataConfig(max_seq_length=64, valid_fraction=0))
    assert prepared.report.dropped_too_long == 1 and len(prepared.train) == 4


def test_token_statistics_and_histogram(write, tokenizer):
    rows = [chat(i, "x " * (i % 13)) if i % 13 else chat(i) for i in range(60)]
    prepared = prepare_dataset(write("t.jsonl", jsonl(rows)), tokenizer())
    st = prepared.report.train_stats
    lengths = [len(e.tokens) for e in prepared.train]
    assert st.examples == len(prepared.train) == 54
    assert st.tokens == sum(lengths)
    assert st.trained_tokens == sum(sum(e.loss_mask) for e in prepared.train)
    assert (st.length_min, st.length_max) == (min(lengths), max(lengths))
    assert st.length_median == statistics.median(lengths)
    assert st.length_min <= st.length_p95 <= st.length_max
    assert sum(st.histogram_counts) == st.examples
    assert len(st.histogram_edges) == len(st.histogram_counts) + 1
    json.dumps(prepared.report.to_dict())  # JSON-serializable for the app and run records


def test_token_stats_quantiles():
    st = TokenStats.from_lengths(list(range(1, 101)), trained=7)
    assert (st.length_min, st.length_median, st.length_p95, st.length_max) == (1, 50.5, 95.05, 100)
    assert st.histogram_counts == [5] * 20 and st.histogram_edges[0] == 1


def test_progress_events_and_cancel(write, tokenizer):
    path = write("p.jsonl", jsonl([chat(i) for i in range(40)]))
    events = ListReporter()
    prepare_dataset(path, tokenizer(), report=events)
    progress = events.of(Progress)
    assert {p.stage for p in progress} == {"read", "tokenize"}
    assert progress[-1].done == 1000
    token = CancelToken()
    token.cancel("user stop")
    with pytest.raises(Cancelled):
        prepare_dataset(path, tokenizer(), cancel=token)


def test_problem_locations_and_strict_mode(write, tokenizer):
    path = write("m.jsonl", jsonl([chat(0), '{"messages": 5', chat(2), chat(3),
                                   {"messages": [{"role": "user", "content": "x"}]}]))
    rep = prepare_dataset(path, tokenizer()).report
    assert [str(p) for p in rep.errors] == [
        "m.jsonl:2:15: invalid JSON: Expecting ',' delimiter",
        "m.jsonl:5: no assistant message: nothing to train on"]
    assert rep.to_dict()["problems"][0]["location"] == "m.jsonl:2:15"
    assert (rep.good, rep.skipped, rep.records) == (3, 2, 5)
    with pytest.raises(TailorError, match=r"m.jsonl:2:15: invalid JSON"):
        prepare_dataset(path, tokenizer(), DataConfig(strict=True))


def test_invalid_settings_are_refused(write, tokenizer):
    path = write("x.jsonl", jsonl([chat(i) for i in range(3)]))
    with pytest.raises(TailorError, match="too_long = 'cut' is not one of truncate, drop"):
        prepare_dataset(path, tokenizer(), DataConfig(too_long="cut"))


def test_data_config_fields_carry_help():
    from engine.configs import field_help
    from engine.data import DataConfig

    assert all(len(text) > 10 for text in field_help(DataConfig).values())
