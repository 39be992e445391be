"""The evaluation record (engine/evaluate/record.py): one new file per report, never replaced;
an unreadable file is named, not fatal; reports come back oldest first."""
from __future__ import annotations

import pytest

from engine.evaluate.record import EVALUATIONS, latest_report, load_reports, save_report
from engine.events import TailorError
from engine.results import EvalExample, EvalReport, EvalScores


def _report(created: float, verdict: str) -> EvalReport:
    return EvalReport(adapter="a", created=created, verdict=verdict,
                      base=EvalScores(loss=2.0, exact_match=0.0),
                      tuned=EvalScores(loss=float("inf")),
                      examples=[EvalExample(source="f.jsonl:3", base_answer="x")])


def test_reports_round_trip_and_an_unreadable_one_is_named(tmp_path):
    later = save_report(tmp_path, _report(2_000_000_000.0, "later"))
    first = save_report(tmp_path, _report(1_900_000_000.0, "first"))
    assert later.parent == first.parent == tmp_path / EVALUATIONS
    (tmp_path / EVALUATIONS / "broken.json").write_text("{not json")
    (tmp_path / EVALUATIONS / "other.json").write_text('{"type": "export"}')
    reports, problems = load_reports(tmp_path)
    assert [r.verdict for r in reports] == ["first", "later"]
    assert reports[1].tuned.loss == float("inf")  # sent as "inf" (JSON has none), read back
    assert reports[0].examples[0] == EvalExample(source="f.jsonl:3", base_answer="x")
    assert len(problems) == 2 and all("unreadable evaluation report" in p for p in problems)
    assert latest_report(tmp_path).verdict == "later"
    assert latest_report(tmp_path / "nothing-here") is None


def test_a_report_is_never_replaced(tmp_path):
    r = _report(1_900_000_000.0, "one")
    path = save_report(tmp_path, r)
    before = path.read_bytes()
    with pytest.raises(TailorError, match="already exists"):
        save_report(tmp_path, r)  # same id: refused, the kept one untouched
    assert path.read_bytes() == before


def test_a_non_finite_loss_reads_back_and_formats(tmp_path):
    from engine.evaluate.markdown import report_markdown

    r = _report(1_900_000_000.0, "x")
    r.base.perplexity = float("nan")
    save_report(tmp_path, r)
    (back,), _ = load_reports(tmp_path)
    assert back.tuned.loss == float("inf") and back.base.perplexity != back.base.perplexity
    assert "inf" in back.format_text() and "| loss (nats per trained token) | 2.000 | inf |" \
        in report_markdown(back)
