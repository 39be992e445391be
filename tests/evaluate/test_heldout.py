"""`tailor eval` held-out evaluation (engine/evaluate/heldout.py, run.py, record.py): an adapter
trained on a learnable toy task beats its base on the run's held-out examples; every report is
kept in the adapter's record and reads back equal; bad input changes nothing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import library
from engine.cli import main as cli_main
from engine.events import Job, TailorError, decode_event
from engine.evaluate.heldout import HeldOut, _fill, _Side
from engine.evaluate.generation import Answer
from engine.evaluate.record import EVALUATIONS, latest_report, load_reports
from engine.evaluate.run import evaluate_adapter
from engine.results import EvalReport
from tests.conftest import snapshot_tree
from tests.train.conftest import ANSWER, write_toy_chat

NAME = "toy"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model):
    """A qwen2 adapter trained (about 10 s) to answer every question with ANSWER, in a
    library of its own: (library folder, dataset). Tests copy it into their own library."""
    from engine.train.config import make_config
    from engine.train.run import train_adapter

    root = tmp_path_factory.mktemp("eval-trained")
    data = write_toy_chat(root / "toy.jsonl", n=60)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TAILOR_HOME", str(root / "home"))
        train_adapter(str(tiny_model("qwen2")), data, NAME,
                      make_config(iters=40, eval_every=0, rank=8, batch_size=4,
                                  learning_rate=3e-3), library_dir=root / "lib")
    return root / "lib", data


@pytest.fixture
def adapter(trained, tailor_home) -> library.AdapterInfo:
    lib, _ = trained
    shutil.copytree(lib / NAME, tailor_home / "adapters" / NAME)
    return library.get_adapter(NAME)


def test_adapter_beats_its_base_on_the_runs_held_out_examples(adapter):
    report = evaluate_adapter(NAME, Job("eval"), probe=False)
    assert report.data["split"] == "validation" and len(report.examples) == 6
    assert report.tuned.exact_match >= 0.8 and report.base.exact_match == 0.0
    assert report.tuned.rouge_l > report.base.rouge_l + 0.5
    assert report.tuned.loss < report.base.loss / 10
    assert report.verdict.startswith("the adapter does better than its base on 6 held-out")
    # the examples are the run's own validation split and the loss is training's: the base's
    # loss is the run's validation loss at step 0, the adapter's the one at its last step
    valid = adapter.manifest["loss_history"]["valid"]
    assert valid[0][0] == 0
    assert report.base.loss == pytest.approx(valid[0][1], rel=1e-3)
    assert report.tuned.loss == pytest.approx(valid[-1][1], rel=0.05, abs=1e-3)
    assert report.base.perplexity > report.tuned.perplexity >= 1.0
    assert report.base.trained_tokens == report.tuned.trained_tokens > 0
    right = [e for e in report.examples if e.adapter_answer == ANSWER]
    assert len(right) >= 5 and all(e.base_answer != ANSWER for e in report.examples)
    assert all(e.reference == ANSWER and e.prompt.startswith("Tell me about")
               for e in report.examples)


def test_reports_are_kept_and_read_back_equal(adapter, tailor_home):
    before = snapshot_tree(tailor_home)
    first = evaluate_adapter(NAME, Job("eval"), probe=False, limit=3, seed=1)
    second = evaluate_adapter(NAME, Job("eval"), probe=False, limit=4, seed=2)
    after = snapshot_tree(tailor_home)
    new = sorted(set(after) - set(before))
    assert new == sorted([str(Path(first.path).relative_to(tailor_home)),
                          str(Path(second.path).relative_to(tailor_home))])
    assert all(p.startswith(f"adapters/{NAME}/{EVALUATIONS}/") for p in new)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing else changed
    reports, problems = load_reports(adapter.path)
    assert problems == [] and reports == [first, second]
    assert latest_report(adapter.path) == second
    assert len(first.examples) == 3 and len(second.examples) == 4
    # reproducible: the hashes, settings, seed and versions are in the record
    assert first.data["sha256"] == adapter.manifest["dataset"]["sha256"]
    assert first.base_model["sha256"] == adapter.manifest["base_model"]["sha256"]
    assert first.base_model["matches_training"] is True
    assert len(first.adapter_sha256) == 64
    assert first.settings["seed"] == 1 and first.settings["limit"] == 3
    assert set(first.versions) == {"tailor", "mlx", "mlx_lm"}
    raw = json.loads(Path(first.path).read_text())
    assert raw["type"] == "eval.report" and raw["schema"] == "tailor.eval/1"


def test_cli_reports_the_typed_result_and_writes_markdown(adapter, tmp_path, capsys):
    events, md = tmp_path / "events.jsonl", tmp_path / "report.md"
    rc = cli_main(["eval", "--adapter", NAME, "--no-probe", "--limit", "4", "--seed", "3",
                   "--markdown", str(md), "--events", str(events)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    finished = [decode_event(line) for line in events.read_text().splitlines()
                if '"finished"' in line]
    report = finished[0].result
    assert isinstance(report, EvalReport) and report == latest_report(adapter.path)
    assert report.verdict in printed and "exact match" in printed
    text = md.read_text()
    assert report.data["sha256"] in text and report.adapter_sha256 in text
    assert f"tailor eval --adapter {NAME} --limit 4 --seed 3" in text
    assert ANSWER in text and report.verdict in text
    # an existing Markdown file is refused before any work: no second report
    rc = cli_main(["eval", "--adapter", NAME, "--no-probe", "--markdown", str(md)])
    assert rc == 1 and "already exists" in capsys.readouterr().err
    assert len(load_reports(adapter.path)[0]) == 1 and md.read_text() == text


def test_an_eval_file_with_bad_lines_gets_the_importers_report(adapter, tailor_home, tmp_path):
    bad = write_toy_chat(tmp_path / "held.jsonl", n=5)
    lines = bad.read_text().splitlines()
    lines[1] = "{not json"
    lines[3] = json.dumps({"colour": "blue"})
    bad.write_text("\n".join(lines) + "\n")
    before = snapshot_tree(tailor_home)
    with pytest.raises(TailorError) as e:
        evaluate_adapter(NAME, Job("eval"), data=bad, probe=False)
    assert "held.jsonl: 2 bad examples; nothing was evaluated" in e.value.message
    assert "held.jsonl:2:" in e.value.message and "held.jsonl:4:" in e.value.message
    assert "tailor data check" in e.value.hint
    assert snapshot_tree(tailor_home) == before


def test_an_eval_file_is_evaluated_whole(adapter, tmp_path):
    held = write_toy_chat(tmp_path / "held.jsonl", n=5, seed=7)
    report = evaluate_adapter(NAME, Job("eval"), data=held, probe=False)
    assert report.data["split"] == "all" and len(report.examples) == 5
    assert report.tuned.exact_match > report.base.exact_match


def test_a_missing_base_model_is_named_with_a_hint(adapter, tailor_home):
    manifest = dict(adapter.manifest)
    gone = str(tailor_home / "moved-away" / "qwen2")
    manifest["base_model"] = dict(manifest["base_model"], path=gone, given=gone)
    library.write_manifest(adapter.path, manifest)
    before = snapshot_tree(tailor_home)
    with pytest.raises(TailorError) as e:
        evaluate_adapter(NAME, Job("eval"), probe=False)
    assert e.value.message == f"the base model of adapter {NAME!r} is missing: {gone}"
    assert "put the model folder back" in e.value.hint
    assert snapshot_tree(tailor_home) == before


def test_a_dataset_changed_since_training_is_refused(adapter, trained, tailor_home, tmp_path):
    changed = tmp_path / "changed.jsonl"
    shutil.copy(trained[1], changed)
    with open(changed, "a", encoding="utf-8") as f:
        f.write(json.dumps({"messages": [{"role": "user", "content": "new"},
                                         {"role": "assistant", "content": "x"}]}) + "\n")
    manifest = dict(adapter.manifest)
    manifest["dataset"] = dict(manifest["dataset"], path=str(changed))
    library.write_manifest(adapter.path, manifest)
    before = snapshot_tree(tailor_home)
    with pytest.raises(TailorError, match="changed since adapter 'toy' was trained") as e:
        evaluate_adapter(NAME, Job("eval"), probe=False)
    assert "--data FILE" in e.value.hint
    assert snapshot_tree(tailor_home) == before


def test_examples_where_the_adapter_got_worse_come_first():
    items = [HeldOut(f"f.jsonl:{i}", [1, 2, 3], [0, 1, 1], [{"role": "user", "content": q}],
                     "river fish") for i, q in enumerate(["a", "b", "c"], start=1)]
    base = _Side([(-2.0, 2)] * 3, [Answer("river fish"), Answer("cat"), Answer("river")])
    tuned = _Side([(-1.0, 2)] * 3, [Answer("cat"), Answer("river fish"), Answer("river")])
    report = EvalReport()
    _fill(report, items, items, base, tuned)
    assert [e.source for e in report.examples] == ["f.jsonl:1", "f.jsonl:3", "f.jsonl:2"]
    assert [e.worse for e in report.examples] == [True, False, False]
    assert report.worse == 1 and report.better == 2  # example 3: same answer, lower loss
    assert report.base.exact_match == pytest.approx(1 / 3)
    assert report.tuned.exact_match == pytest.approx(1 / 3)
    assert report.tuned.loss == pytest.approx(0.5) and report.base.loss == pytest.approx(1.0)


def test_a_stopped_evaluation_keeps_nothing(adapter, tailor_home):
    from engine.events import Cancelled, Progress

    before = snapshot_tree(tailor_home)
    job = Job("eval")
    seen = []

    def report(event):
        if isinstance(event, Progress) and event.stage == "answers":
            seen.append(event)
            if len(seen) == 2:  # the base is answering: stop
                job.cancel.cancel()

    job.report = report
    with pytest.raises(Cancelled):
        evaluate_adapter(NAME, job, probe=False, batch_size=2)
    # stopped at the next decoding step: the base's answers were not all given
    assert 2 <= len(seen) <= 3 and seen[-1].message != "6 of 6 answers"
    assert snapshot_tree(tailor_home) == before


def test_the_forgetting_probe_is_part_of_the_kept_report(adapter):
    from engine.results import ProbeResult

    report = evaluate_adapter(NAME, Job("eval"), limit=2)
    assert isinstance(report.probe, ProbeResult) and report.probe.items
    assert report.probe.verdict in report.format_text()
    (kept,), _ = load_reports(adapter.path)
    assert kept == report and isinstance(kept.probe, ProbeResult)


def test_a_base_that_is_not_the_trained_one_is_said(adapter, tailor_home):
    manifest = dict(adapter.manifest)
    manifest["base_model"] = dict(manifest["base_model"], sha256="0" * 64)
    library.write_manifest(adapter.path, manifest)
    report = evaluate_adapter(NAME, Job("eval"), probe=False, limit=2)
    assert report.base_model["matches_training"] is False
    assert report.notes and "is not the one the adapter was trained on" in report.notes[0]
    assert "note: the base model at" in report.format_text()


def test_the_bases_answers_are_checked_against_the_runs_baseline(adapter, tailor_home):
    recorded = adapter.manifest["baseline"]["prompts"]
    assert recorded  # the run answered its held-out prompts with the base before step 1
    report = evaluate_adapter(NAME, Job("eval"), probe=False, limit=len(recorded))
    assert {e.source for e in report.examples} == {p["source"] for p in recorded}
    assert report.data["baseline"] == {"prompts": len(recorded), "same_answers": len(recorded)}
    assert not report.notes
    # a smaller sample still holds every baseline prompt, whatever the seed
    manifest = dict(adapter.manifest)
    manifest["baseline"] = dict(manifest["baseline"], prompts=recorded[:2])
    library.write_manifest(adapter.path, manifest)
    for seed in range(4):
        report = evaluate_adapter(NAME, Job("eval"), probe=False, limit=3, seed=seed)
        assert len(report.examples) == 3
        assert {p["source"] for p in recorded[:2]} <= {e.source for e in report.examples}
        assert report.data["baseline"] == {"prompts": 2, "same_answers": 2}
    # a record whose baseline answers differ (another base, another template) is said
    manifest = dict(adapter.manifest)
    manifest["baseline"] = dict(manifest["baseline"], prompts=[
        dict(p, tokens=[t + 1 for t in p["tokens"]] or [1]) for p in recorded])
    library.write_manifest(adapter.path, manifest)
    report = evaluate_adapter(NAME, Job("eval"), probe=False, limit=len(recorded))
    assert report.data["baseline"]["same_answers"] == 0
    assert any("baseline prompts differently than before training" in n for n in report.notes)


def test_text_data_gets_loss_only(adapter, tmp_path):
    from engine.evaluate.markdown import report_markdown

    held = tmp_path / "text.jsonl"
    held.write_text("".join(json.dumps({"text": f"Tell me about the river number {i}. "
                                                 f"{ANSWER}"}) + "\n" for i in range(4)))
    report = evaluate_adapter(NAME, Job("eval"), data=held, probe=False)
    assert len(report.examples) == 4 and report.data["answer_style"] == 0
    assert report.base.loss is not None and report.tuned.loss is not None
    assert report.base.exact_match is None and report.tuned.rouge_l is None
    assert any("no answer to compare" in n for n in report.notes)
    assert "exact match" not in report.verdict and "loss" in report.verdict
    assert "loss" in report.format_text() and "| exact match | – | – |" in report_markdown(report)
