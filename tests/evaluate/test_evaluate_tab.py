"""The Library's Evaluate tab (app/evaluate_view.py): Evaluate runs the real `tailor eval`
worker on the selected adapter, and the tab shows the kept report with the answers of base
and adapter beside the reference; another adapter's tab shows its own latest report."""
from __future__ import annotations

import html
import json

import pytest
from PySide6.QtCore import Qt

pytestmark = [pytest.mark.gui]


def _with_dataset(folder, data):
    """Give a made-up adapter's record a dataset, as a training run records it."""
    from engine.data.prepare import dataset_files, dataset_sha256
    from engine.library import read_manifest, write_manifest

    m = read_manifest(folder)
    m["dataset"] = {"path": str(data), "sha256": dataset_sha256(dataset_files(data))}
    m["data_settings"] = {"valid_fraction": 0.25, "split_seed": 0}
    write_manifest(folder, m)


def test_evaluate_button_runs_tailor_eval_and_shows_the_answers(qtbot, tailor_home, tiny_model,
                                                                tmp_path):
    from app.evaluate_view import eval_command
    from app.pages.library import LibraryPage
    from app.state import AppState
    from engine.evaluate.record import load_reports
    from tests.merge.helpers import make_lora
    from tests.train.conftest import ANSWER, write_toy_chat

    base = tiny_model("llama3")
    data = write_toy_chat(tmp_path / "toy.jsonl", n=12)
    for name in ("one", "two"):
        _with_dataset(make_lora(name, base, seed=1), data)
    page = LibraryPage(AppState())
    qtbot.addWidget(page)
    page.resize(1024, 700)
    page.show()
    assert page.select("one")
    tab = page.eval_view
    page.tabs.setCurrentWidget(tab)
    assert "Not evaluated yet" in tab.view.toPlainText()
    assert tab.argv()[3:] == ["eval", "--adapter", "one", "--events", "-", "--quiet"]
    assert eval_command("one", limit=8, probe=False)[3:] == [
        "eval", "--adapter", "one", "--limit", "8", "--no-probe", "--events", "-", "--quiet"]

    tab.probe_box.setChecked(False)  # the probe has its own tests; keep this one short
    qtbot.mouseClick(tab.button, Qt.MouseButton.LeftButton)
    assert not tab.button.isEnabled() and tab.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: tab.job.done, timeout=120000)
    (kept,), _ = load_reports(page.selected().path)
    assert tab.banner.label.text() == html.escape(kept.verdict)
    shown = tab.view.toPlainText()
    assert kept.verdict in shown and "With the adapter" in shown
    for e in kept.examples:
        assert e.prompt in shown and e.adapter_answer in shown
    assert ANSWER in shown  # the reference, beside the answers
    assert tab.button.isEnabled() and not tab.cancel_button.isEnabled()

    page.select("two")  # not evaluated: its own tab, not one's report
    assert "Not evaluated yet" in tab.view.toPlainText()
    page.select("one")  # read back from the record
    assert kept.verdict in tab.view.toPlainText()
    assert json.loads(open(kept.path).read())["type"] == "eval.report"
