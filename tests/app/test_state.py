"""Issue 14: the window's state never lies. Each page derives its buttons, banner, progress and
counters from a few facts in one refresh(); these tests replay recorded engine events (the
fake worker) and check that nothing from an earlier file, run or check is left on screen."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PySide6.QtCore import Qt

pytestmark = [pytest.mark.gui]


def replay(tmp_path: Path, name: str, events: list[dict]) -> Path:
    """A recorded event stream for ``fake_engine.py --replay``."""
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"v": 1, **e}) + "\n" for e in events))
    return path


def good_report(n_train: int = 27) -> dict:
    return {"format": "jsonl", "schema": "chat", "encoding": "utf-8", "records": 30,
            "good": 30, "skipped": 0, "errors": 0, "train_examples": n_train,
            "valid_examples": 3, "problems": [],
            "train_stats": {"tokens": 900, "trained_tokens": 300, "length_min": 20,
                            "length_median": 30, "length_p95": 40, "length_max": 44,
                            "histogram_edges": [20, 30, 40, 50],
                            "histogram_counts": [10, 12, 5]},
            "preview": [{"source": "old.jsonl:1",
                         "segments": [["What is 1 plus one?", False],
                                      ["1 plus one is 2.", True]]}]}


def use_checks(page, fake_argv, tmp_path, results: list[list[dict]]):
    """The Data page's checks replay ``results`` in turn instead of running the engine."""
    streams = iter(enumerate(results))

    def command(path, model):
        i, events = next(streams)
        return fake_argv("--replay", str(replay(tmp_path, f"check{i}", events)),
                         "--then", "exit:0")
    page.check_command = command


def test_a_dataset_that_fails_its_check_clears_the_last_one_and_disables_start(
        qtbot, window, tiny_model, tmp_path, fake_argv):
    window.state.set_model(str(tiny_model("qwen2")))
    data, train = window.pages["Data"], window.pages["Train"]
    use_checks(data, fake_argv, tmp_path, [
        [{"event": "finished", "job": "data", "result": good_report()}],
        [{"event": "failed", "job": "data", "message": "bad.bin is a zip archive, not a "
          "dataset", "hint": "unpack it and drop the JSONL inside"}]])
    (tmp_path / "old.jsonl").write_text("{}\n")
    window.state.set_data(str(tmp_path / "old.jsonl"))
    qtbot.waitUntil(lambda: data.status == "ok", timeout=20000)
    assert data.fields["split"].text() == "27 train · 3 validation"
    assert "1 plus one is 2." in data.preview.toPlainText()
    assert train.start_button.isEnabled()

    (tmp_path / "bad.bin").write_bytes(b"PK\x03\x04")
    window.state.set_data(str(tmp_path / "bad.bin"))
    # At once, before the new check ends: nothing of old.jsonl under the new name.
    assert data.fields["split"].text() == "–" and data.preview.toPlainText() == ""
    qtbot.waitUntil(lambda: data.status == "failed", timeout=20000)
    assert data.banner.kind == "error"
    assert "bad.bin cannot be used: bad.bin is a zip archive" in data.banner.text()
    assert "unpack it" in data.banner.text()
    assert all(v.text() == "–" for v in data.fields.values())
    assert data.preview.toPlainText() == "" and data.problems.rowCount() == 0
    assert not train.start_button.isEnabled()
    assert "did not pass its check" in train.start_button.toolTip()
    assert train.start() is False and train.job is None
    assert "zip archive" in train.banner.text()


def test_a_failed_start_offers_no_resume_and_leaves_no_load_progress(
        qtbot, window, tmp_path, fake_argv):
    page = window.pages["Train"]
    window.show_page("Train")
    stream = replay(tmp_path, "fail", [
        {"event": "started", "job": "train"},
        {"event": "progress", "job": "train", "stage": "load", "done": 1, "total": 3},
        {"event": "failed", "job": "train", "message": "no adapter named “ghost” to resume",
         "hint": "Start a new run instead"}])
    page._launch("Resume ghost", fake_argv("--replay", str(stream), "--delay", "0.4",
                                           "--then", "exit:1"), "ghost")
    qtbot.waitUntil(lambda: page.progress.text() == "load: 33%", timeout=20000)
    qtbot.waitUntil(lambda: page.job.done, timeout=20000)
    assert page.job.state == "failed"
    assert "Training failed: no adapter named “ghost”" in page.banner.text()
    assert not page.resume_button.isEnabled() and "resume" not in page.banner.buttons
    assert page.progress.text() == "" and page.progress.value() == 0
    assert page.stat_labels["step"].text() == "–"

    # A new dataset: the old failure is no longer news.
    window.state.set_data(str(tmp_path / "next.jsonl"))
    assert page.banner.isHidden() and page.banner.text() == ""
    assert not page.resume_button.isEnabled()


def test_stop_clears_speed_and_time_left_and_offers_resume(qtbot, window, fake_argv):
    page = window.pages["Train"]
    window.show_page("Train")
    page._launch("Train fake", fake_argv("--steps", "3", "--then", "wait-stop"), "fake")
    qtbot.waitUntil(lambda: page.job.worker.last_checkpoint is not None
                    and page.stat_labels["tps"].text() == "5,000", timeout=20000)
    assert page.stat_labels["eta"].text() == "–" or page.stat_labels["eta"].text().endswith("s")
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job.done, timeout=20000)
    assert page.job.state == "cancelled"
    assert page.stat_labels["tps"].text() == "–" and page.stat_labels["eta"].text() == "–"
    assert page.stat_labels["step"].text() == "3/3"  # what was reached stays
    assert page.resume_button.isEnabled() and "resume" in page.banner.buttons


def test_the_ollama_status_line_never_contradicts_the_banner(qtbot, window, tmp_path):
    from tests.ollama.fake_server import FakeOllama

    from .test_app import _exported

    page = window.pages["Export"]
    window.show_page("Export")
    _exported(page, tmp_path)
    with FakeOllama() as server:
        window.settings.setValue("ollama/host", server.host)
        page.check_ollama()
        qtbot.waitUntil(lambda: page.ollama_status.text().startswith("running"),
                        timeout=60000)
    # Ollama was quit since the check: the hand-off finds it gone.
    page.name_edit.setText("pip-gone")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.ollama_job.done, timeout=60000)
    assert page.banner.kind == "warn" and "Ollama is not running" in page.banner.text()
    assert page.ollama_status.text().startswith("not running"), page.ollama_status.text()
    # The command shown can be copied, and the GGUF shown in Finder.
    from PySide6.QtWidgets import QApplication

    assert page.copy_button.isEnabled() and page.reveal_button.isEnabled()
    qtbot.mouseClick(page.copy_button, Qt.MouseButton.LeftButton)
    assert "ollama create pip-gone -f" in QApplication.clipboard().text()
    shown = []
    page.reveal = shown.append
    qtbot.mouseClick(page.reveal_button, Qt.MouseButton.LeftButton)
    assert shown == [str(page.last_export.path)]
