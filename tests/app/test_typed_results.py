"""The Export page reads the engine's typed results (issue 13: it read ``adapter_only``,
``folder``, ``ollama`` and ``offline``, keys no result has, so an adapter-only export was taken
for a whole model whenever the checkbox no longer said so)."""
from __future__ import annotations

from pathlib import Path

from engine.events import ErrorCode, Failed, Finished, decode_event
from engine.results import ExportResult, HandoffResult, OllamaStatus


def _through_the_wire(result):
    return decode_event(Finished(job="x", result=result).to_json()).result


def test_an_adapter_only_export_is_shown_as_one_whatever_the_checkbox_says(window, tmp_path):
    page = window.pages["Export"]
    gguf = tmp_path / "style-lora.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    page.adapter_only.setChecked(False)  # e.g. unticked while the export ran
    result = _through_the_wire(ExportResult(
        path=gguf, quant="f16", size_bytes=64, kind="adapter",
        verification={"passed": True, "checks": [
            {"name": "structure", "passed": True, "detail": "re-read"},
            {"name": "space prefix", "passed": None, "detail": "recorded"}]}))
    assert isinstance(result, ExportResult)
    page._on_exported(result)
    assert "a LoRA adapter file" in page.banner.plain_text()
    assert "adapter-only file needs its base model" in page.send_reason.text()
    assert not page.send_button.isEnabled()
    assert [page.checks.item(i, 1).text() for i in range(2)] == ["passed", "noted"]
    assert page.checks.item(1, 2).text() == "recorded"


def test_a_whole_model_export_shows_its_own_path_and_size(window, tmp_path):
    page = window.pages["Export"]
    gguf = tmp_path / "pip-q8_0.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 60)
    page.adapter_only.setChecked(True)  # the page's checkbox is not the result
    page._on_exported(_through_the_wire(ExportResult(
        path=gguf, quant="q8_0", size_bytes=2_621_440, kind="model",
        verification={"passed": True, "checks": []})))
    text = page.banner.plain_text()
    from app.estimate import human_bytes
    assert "pip-q8_0.gguf" in text and f"({human_bytes(2_621_440)})" in text
    assert "Send to Ollama" in text
    assert page.send_button.isEnabled()


def test_an_offline_hand_off_shows_the_folder_and_command_it_wrote(window, tmp_path):
    page = window.pages["Export"]
    folder = tmp_path / "pip-ollama"
    page._on_sent("pip", _through_the_wire(HandoffResult(
        model="pip", created=False, modelfile_dir=str(folder),
        command=f"ollama create pip -f {folder}/Modelfile", host="http://127.0.0.1:9")))
    text = page.banner.plain_text()
    assert str(folder) in text and f"ollama create pip -f {folder}/Modelfile" in text
    assert page.ollama_result.toPlainText().startswith(f"ollama create pip -f {folder}")
    assert "not running at http://127.0.0.1:9" in page.ollama_status.text()


def test_the_ollama_status_is_read_from_its_typed_record(window):
    page = window.pages["Export"]
    page.set_ollama(_through_the_wire(OllamaStatus(host="http://h:1", reachable=True,
                                                   version="0.6.8", models=["a", "b"])))
    assert page.ollama_status.text() == "running (version 0.6.8, 2 models) at http://h:1"


def test_a_taken_name_is_recognised_by_its_code():
    from app.pages.export import name_taken

    assert name_taken(Failed(message="in use", code=ErrorCode.NAME_TAKEN))
    assert not name_taken(Failed(message="other", code=ErrorCode.NOT_RUNNING))
    # a version-1 worker's failure (no code, the class name) still counts
    assert name_taken(decode_event('{"event": "failed", "v": 1, "message": "m", '
                                   '"error_type": "OllamaNameTaken"}'))


# -- the Data page reads the DataReport's fields (it read ~25 keys through a dict view) ----------

def _distinct_report():
    """Every number the Data page shows is different, so a field read under the wrong name
    shows the wrong figure (or fails) instead of passing by coincidence."""
    from engine.results import DataReport, PreviewExample, Problem, TokenStats

    return DataReport(
        path="/d/chat.jsonl", format="jsonl", schema="sharegpt", encoding="utf-16",
        records=31, good=29, skipped=2, duplicates=3, leakage=4, truncated=5,
        dropped_too_long=6, train_examples=23, valid_examples=7, test_examples=8,
        problems=[Problem(file="/d/chat.jsonl", line=12, column=9, message="not JSON"),
                  Problem(file="/d/chat.jsonl", line=14, message="empty reply",
                          severity="warning")],
        train_stats=TokenStats(examples=23, tokens=1234, trained_tokens=567, length_min=11,
                               length_median=33, length_p95=77, length_max=99,
                               histogram_edges=[11, 51, 91, 131],
                               histogram_counts=[13, 8, 2]),
        valid_stats=TokenStats(examples=7, tokens=4321),
        preview=[PreviewExample(source="chat.jsonl:3",
                                segments=[("Say hi. ", False), ("Hi there!", True)])])


def test_the_data_page_shows_every_figure_of_the_report_from_its_fields(window, tmp_path):
    page = window.pages["Data"]
    window.state.set_model(str(tmp_path))  # the page shows reports only once a model is set
    report = _through_the_wire(_distinct_report())
    page.show_report(report)
    f = {k: v.text() for k, v in page.fields.items()}
    assert f["format"] == "jsonl · schema sharegpt · utf-16"
    assert f["counts"] == "29 good, 2 skipped of 31 read"
    assert f["split"] == "23 train · 7 validation · 8 test"
    assert f["tokens"] == "1,234 (567 trained)"
    assert f["lengths"] == "min 11, median 33, 95% 77, max 99"
    assert f["cleaning"] == ("3 duplicates removed, 5 truncated, 6 dropped as too long, "
                             "4 leaked into validation")
    # one bad line (an error) is skipped; the warning is listed, not counted as skipped
    assert "1 bad line(s) will be skipped" in page.banner.plain_text()
    rows = [[page.problems.index(r, c).data() for c in range(3)] for r in range(2)]
    assert rows == [["chat.jsonl", "12:9", "not JSON"],
                    ["chat.jsonl", "14", "(warning) empty reply"]]
    from PySide6.QtCore import Qt
    assert page.problems.index(0, 2).data(Qt.ItemDataRole.ToolTipRole) == \
        "/d/chat.jsonl:12:9: not JSON"
    assert page.tabs.tabText(1) == "Problems (2)"
    assert window.state.report.train_examples == 23  # what the Train page sizes epochs with


def test_the_data_page_shows_the_preview_and_the_histogram_of_a_clean_report(window, tmp_path):
    from engine.results import DataReport

    page = window.pages["Data"]
    r = _distinct_report()
    r.problems = []
    page.show_report(_through_the_wire(r))
    assert page.banner.kind == "ok"
    assert "Ready: 23 training examples" in page.banner.plain_text()
    text = page.preview.toPlainText()
    assert "chat.jsonl:3" in text and "Say hi. Hi there!" in text
    assert "background-color" in page.preview.toHtml()  # the trained span is highlighted
    bars = [i for i in page.histogram.getPlotItem().items if type(i).__name__ == "BarGraphItem"]
    assert len(bars) == 1 and list(bars[0].opts["height"]) == [13, 8, 2]
    assert isinstance(window.state.report, DataReport)


def test_a_report_missing_its_format_says_so_with_question_marks(window):
    from engine.results import DataReport

    page = window.pages["Data"]
    page.show_report(_through_the_wire(DataReport(train_examples=4, good=4, records=4)))
    assert page.fields["format"].text() == "? · schema ? · ?"
    assert page.fields["split"].text() == "4 train · 0 validation"
    # a version-1 worker's dict still reads (as a DataReport)
    page.show_report({"format": "csv", "schema": "alpaca", "encoding": "utf-8",
                      "train_examples": 5, "valid_examples": 1})
    assert page.fields["format"].text() == "csv · schema alpaca · utf-8"
    assert page.fields["split"].text() == "5 train · 1 validation"


def test_a_report_with_no_training_examples_fails_the_dataset(window):
    from engine.results import DataReport, Problem

    page = window.pages["Data"]
    page.show_report(_through_the_wire(DataReport(
        records=2, skipped=2, problems=[Problem(file="x.jsonl", line=1, message="bad"),
                                        Problem(file="x.jsonl", line=2, message="bad")])))
    assert page.status == "failed" and window.state.data_status == "failed"
    assert "no usable training examples" in page.banner.plain_text()
    assert page.problems.rowCount() == 2


# -- the Train page reads the TrainResult and the state's DataReport -----------------------------

def _finish_run(page, result):
    from app.pages.train import RunView
    from engine.results import JobState

    page.view = RunView(state=JobState.FINISHED, name="pip")
    page._on_finished(result)
    page.refresh()
    return page.banner.plain_text()


def test_a_finished_run_says_its_steps_and_best_loss_from_the_train_result(window):
    from engine.results import TrainResult

    page = window.pages["Train"]
    text = _finish_run(page, _through_the_wire(TrainResult(
        adapter="pip", steps=37, best_val_loss=1.23456, final_train_loss=0.5)))
    assert "“pip” is in the Library after 37 steps, best validation loss 1.2346." in text
    assert {a for a, _ in page.view.banner[2]} == {"try", "export"}


def test_a_finished_run_without_its_figures_says_question_mark_not_zero(window):
    page = window.pages["Train"]
    text = _finish_run(page, decode_event('{"event": "finished", "v": 1, "result": {}}').result)
    assert "after ? steps." in text and "validation loss" not in text


def test_the_train_page_sizes_an_epoch_from_the_typed_data_report(window):
    from engine.results import DataReport

    page = window.pages["Train"]
    window.state.set_report(_through_the_wire(DataReport(train_examples=216)))
    window.state.set_data_status("ok")
    assert page.form.train_examples == 216
    window.state.set_report({"train_examples": 40})  # a version-1 dict still reads
    window.state.set_data_status("ok")
    assert page.form.train_examples == 40


def test_a_result_is_not_a_mapping():
    """The transitional dict view (get, [], keys) is gone: a reader that guesses a key fails at
    once in a test instead of getting None on screen."""
    import pytest

    from engine.results import DataReport, Result

    report = _through_the_wire(DataReport(train_examples=3))
    for name in ("get", "keys", "__getitem__"):
        assert not hasattr(Result, name), name
    with pytest.raises(TypeError):
        report["train_examples"]
    assert report.to_dict()["train_examples"] == 3  # the wire form, for JSON readers
