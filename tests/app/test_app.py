"""The app driven like a user: real widgets offscreen, real engine workers on a tiny model."""
from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from .conftest import screenshot, small_chat_dataset

pytestmark = [pytest.mark.gui, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
FAST = {"batch_size": 2, "learning_rate": 1e-3, "eval_every": 20, "save_every": 10,
        "max_seq_length": 128}


def drop_files(target, paths: list[Path]) -> QDropEvent:
    """Deliver a real drag-enter and drop carrying file URLs, as the OS would."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    pos = QPoint(target.width() // 2, target.height() // 2)
    enter = QDragEnterEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, enter)
    assert enter.isAccepted(), "the window refused a drag of local files"
    drop = QDropEvent(QPointF(pos), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(target, drop)
    return drop


def start_training(qtbot, window, name: str, **settings):
    page = window.pages["Train"]
    window.show_page("Train")
    page.form.set_values({**FAST, **settings})
    page.name_edit.setText(name)
    qtbot.mouseClick(page.start_button, Qt.MouseButton.LeftButton)
    assert page.job is not None, page.banner.text()
    return page


def test_dropping_a_file_fills_the_data_page(qtbot, window, tiny_model, tmp_path, test_output):
    window.state.set_model(str(tiny_model("qwen2")))
    data = small_chat_dataset(tmp_path, n=30, bad_lines=2)
    before = data.read_bytes()
    window.show_page("Train")  # a drop anywhere opens the Data page
    drop = drop_files(window, [data])
    assert drop.isAccepted()
    assert window.current_page() == "Data"
    page = window.pages["Data"]
    qtbot.waitUntil(lambda: page.report is not None, timeout=60000)
    assert page.fields["format"].text().startswith("jsonl · schema chat")
    assert page.problems.rowCount() == 2
    row0 = [page.problems.data(page.problems.index(0, c)) for c in range(3)]
    assert row0[0] == "chat.jsonl" and row0[1].startswith("2") and "JSON" in row0[2]
    assert "2 bad line(s) will be skipped" in page.banner.text()
    import re
    from app.widgets import highlight_colors

    _, bg = highlight_colors(page.palette())
    highlighted = re.findall(rf"background-color:{bg.name()}[^>]*>([^<]*)<",
                             page.preview.toHtml())
    assert highlighted and all("plus one is" in h for h in highlighted), highlighted
    import pyqtgraph as pg
    bars = [i for i in page.histogram.getPlotItem().items if isinstance(i, pg.BarGraphItem)]
    assert bars and sum(bars[0].opts["height"]) == 27  # every training example counted
    assert page.fields["split"].text() == "27 train · 3 validation"
    assert data.read_bytes() == before
    page.tabs.setCurrentIndex(0)
    screenshot(window, test_output, "data")


def test_training_through_the_real_worker_charts_and_lands_in_the_library(
        qtbot, window, tiny_model, tmp_path, test_output):
    window.state.set_model(str(tiny_model("qwen2")))
    window.state.set_data(str(small_chat_dataset(tmp_path, n=40)))
    page = start_training(qtbot, window, "pip-style", iters=200)
    qtbot.waitUntil(lambda: page.chart.point_count() >= 80 or page.job.done, timeout=90000)
    assert not page.job.done, ("the run ended before the chart could be seen mid-run",
                               len(page.history), page.chart.point_count(), page.chart.redraws, page.history.version, page.chart._drawn, page.chart.timer.isActive())
    qtbot.waitUntil(lambda: page.chart.point_count() >= 80, timeout=5000)
    shot = screenshot(window, test_output, "train-mid-run")
    assert page.stop_button.isEnabled() and not page.start_button.isEnabled()
    qtbot.waitUntil(lambda: page.job.done, timeout=120000)
    assert page.job.state == "finished", page.banner.text()
    if os.environ.get("TAILOR_SAVE_DOCS_SCREENSHOT"):
        shutil.copy(shot, REPO / "docs" / "screenshot-train.png")
    qtbot.waitUntil(lambda: page.chart.point_count() == 200, timeout=5000)
    assert len(page.history.valid_loss) >= 10
    assert "Finished" in page.banner.text() and "Library" in page.banner.text()
    assert set(page.banner.buttons) == {"try", "export"}
    assert page.stat_labels["step"].text() == "200/200"
    assert "(exact)" in page.estimate_label.text()  # the engine's count replaced the preview

    library = window.pages["Library"]
    row = library.model.row_of("pip-style")
    assert row >= 0
    assert library.model.value(row, library.model.STATUS) == "finished"
    assert library.model.value(row, library.model.STEPS) == 200
    qtbot.mouseClick(page.banner.buttons["export"], Qt.MouseButton.LeftButton)
    assert window.current_page() == "Export"
    assert window.pages["Export"].adapter_box.currentData() == "pip-style"
    window.show_page("Library")
    assert library.select("pip-style")
    qtbot.waitUntil(lambda: library.chart.point_count() == 200, timeout=5000)
    # Try it: the Playground opens on the new adapter; side by side sends one prompt to both.
    page.banner.show_message("ok", "again", [("try", "Try it")])
    qtbot.mouseClick(page.banner.buttons["try"], Qt.MouseButton.LeftButton)
    play = window.pages["Playground"]
    assert window.current_page() == "Playground"
    assert play.adapter_box.currentData() == "pip-style"
    play.side_by_side.setChecked(True)
    play.max_tokens.setValue(8)
    play.prompt.setPlainText("What is 3 plus one?")
    qtbot.mouseClick(play.send_button, Qt.MouseButton.LeftButton)
    assert len(play.pending) == 2 and play.workers_started == 1  # one worker answers both
    ends = []
    play.worker.reply_finished.connect(ends.append)
    qtbot.waitUntil(lambda: not play.busy(), timeout=120000)
    assert [e.result.adapter for e in ends] == ["", "pip-style"]
    assert [r["adapter"] for r in play.worker.sent] == [None, "pip-style"]
    assert play.left.turns and play.right.turns and play.right.isVisible()
    for name in ("Model", "Library", "Playground", "Export"):
        window.show_page(name)
        qtbot.wait(150)
        screenshot(window, test_output, name.lower())


def test_stop_leaves_a_resumable_run(qtbot, window, tiny_model, tmp_path):
    window.state.set_model(str(tiny_model("qwen2")))
    window.state.set_data(str(small_chat_dataset(tmp_path, n=40)))
    page = start_training(qtbot, window, "stop-me", iters=400)
    qtbot.waitUntil(lambda: page.job.worker.last_checkpoint is not None, timeout=90000)
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job.done, timeout=60000)
    assert page.job.state == "cancelled", page.banner.text()
    assert "Stopped at step" in page.banner.text()
    assert page.resume_button.isEnabled()
    manifest = json.loads((Path(os.environ["TAILOR_HOME"]) / "adapters" / "stop-me" /
                           "manifest.json").read_text())
    assert manifest["status"] == "cancelled"
    stopped_at = manifest["steps"]
    assert 0 < stopped_at < 400
    points_before = len(page.history)

    qtbot.mouseClick(page.resume_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job.done, timeout=120000)
    assert page.job.state == "finished", page.banner.text()
    assert len(page.history) > points_before  # the curve continued, it did not restart
    manifest = json.loads((Path(os.environ["TAILOR_HOME"]) / "adapters" / "stop-me" /
                           "manifest.json").read_text())
    assert (manifest["status"], manifest["steps"]) == ("finished", 400)


def test_a_killed_worker_leaves_the_app_responsive_with_an_error(qtbot, window, tiny_model,
                                                                  tmp_path):
    window.state.set_model(str(tiny_model("qwen2")))
    window.state.set_data(str(small_chat_dataset(tmp_path, n=40)))
    page = start_training(qtbot, window, "doomed", iters=5000, save_every=5)
    qtbot.waitUntil(lambda: page.job.worker.last_checkpoint is not None, timeout=90000)
    os.kill(page.job.worker.pid(), signal.SIGKILL)  # as the OS does when memory runs out
    qtbot.waitUntil(lambda: page.job.done, timeout=30000)
    assert page.job.state == "crashed"
    assert page.banner.kind == "error"
    assert "crashed" in page.banner.text() and "memory" in page.banner.text()
    # Still responsive: the sidebar works and nothing is left running.
    qtbot.mouseClick(window.sidebar.viewport(), Qt.MouseButton.LeftButton,
                     pos=window.sidebar.visualItemRect(window.sidebar.item(3)).center())
    assert window.current_page() == "Library"
    assert page.start_button.isEnabled() and not page.stop_button.isEnabled()
    assert not window.state.queue.busy  # no heavy job left (a data check may still run)
    library = window.pages["Library"]
    library.refresh()
    assert library.model.value(library.model.row_of("doomed"), library.model.STATUS) == \
        "interrupted"

    # The last checkpoint is offered, and resuming continues from it.
    checkpoint_step = page.job.worker.last_checkpoint.iteration
    qtbot.mouseClick(page.banner.buttons["resume"], Qt.MouseButton.LeftButton)
    resumed_steps = []
    page.job.worker.stepped.connect(lambda e: resumed_steps.append(e.iteration))
    qtbot.waitUntil(lambda: len(resumed_steps) >= 3, timeout=90000)
    assert resumed_steps[0] == checkpoint_step + 1
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.job.done, timeout=60000)
    assert page.job.state == "cancelled"


def test_export_writes_a_gguf_the_app_marks_verified(qtbot, window, tiny_model, tmp_path,
                                                     test_output):
    _trained_adapter(qtbot, window, tiny_model, tmp_path, "to-export")
    page = window.pages["Export"]
    window.show_page("Export")
    page.select_adapter("to-export")
    page.quant_box.setCurrentIndex(page.quant_box.findData("f16"))
    qtbot.mouseClick(page.export_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.export_job.done, timeout=180000)
    assert page.export_job.state == "finished", page.banner.text()
    assert page.verified, page.banner.text()
    assert page.last_export.path.exists()
    rows = {page.checks.item(i, 0).text(): i for i in range(page.checks.rowCount())}
    logits = rows["llama.cpp next token = MLX"]
    assert page.checks.item(logits, 1).text() == "passed"
    assert "argmax agrees on" in page.checks.item(logits, 2).toolTip()  # the whole line
    assert "Verified" in page.banner.text()
    assert page.send_button.isEnabled()
    screenshot(window, test_output, "export-verified")

    # The file just written goes on to (the strict fake) Ollama in one click.
    from tests.ollama.fake_server import FakeOllama

    with FakeOllama() as server:
        window.settings.setValue("ollama/host", server.host)
        page.name_edit.setText("to-export")
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.ollama_job.done, timeout=120000)
        assert page.ollama_job.state == "finished", page.banner.text()
        assert "ollama run to-export" in page.banner.text()
        assert "to-export:latest" in server.models


def _trained_adapter(qtbot, window, tiny_model, tmp_path, name: str) -> None:
    window.state.set_model(str(tiny_model("qwen2")))
    window.state.set_data(str(small_chat_dataset(tmp_path, n=20)))
    page = start_training(qtbot, window, name, iters=10)
    qtbot.waitUntil(lambda: page.job.done, timeout=120000)
    assert page.job.state == "finished", page.banner.text()


def _exported(page, tmp_path) -> Path:
    """Put the Export page in the state a verified export leaves it in, with a small real
    GGUF (the Ollama tests' own), so the hand-off is tested without waiting on an export."""
    from tests.ollama.ggufs import make_gguf

    gguf = make_gguf(tmp_path / "pip-f16.gguf", "qwen2")
    page._on_exported({"path": str(gguf), "size_bytes": gguf.stat().st_size,
                       "verification": {"passed": True, "checks": [
                           {"name": "structure", "passed": True, "detail": "re-read"}]}})
    assert page.send_button.isEnabled()
    return gguf


def test_send_to_ollama_succeeds_and_a_refusal_reads_clearly(qtbot, window, tmp_path):
    from tests.ollama.fake_server import FakeOllama

    page = window.pages["Export"]
    window.show_page("Export")
    gguf = _exported(page, tmp_path)
    before = gguf.read_bytes()
    with FakeOllama() as server:
        window.settings.setValue("ollama/host", server.host)
        page.check_ollama()
        qtbot.waitUntil(lambda: "running (version 0.6.8" in page.ollama_status.text(),
                        timeout=60000)
        page.name_edit.setText("pip-test")
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.ollama_job.done, timeout=120000)
        assert page.ollama_job.state == "finished", page.banner.text()
        assert page.banner.kind == "ok" and "ollama run pip-test" in page.banner.text()
        assert "pip-test:latest" in server.models

        server.fault("create", "status:400")
        page.name_edit.setText("pip-test-2")
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.ollama_job.done, timeout=120000)
        assert page.ollama_job.state == "failed"
        assert page.banner.kind == "error"
        assert "Sending to Ollama failed" in page.banner.text() and "400" in page.banner.text()
        assert "pip-test-2:latest" not in server.models
    assert gguf.read_bytes() == before  # the user's file is never touched


def test_a_name_in_use_in_ollama_is_replaced_only_when_the_user_says_so(qtbot, window,
                                                                         tmp_path):
    from tests.ollama.fake_server import FakeOllama

    page = window.pages["Export"]
    window.show_page("Export")
    _exported(page, tmp_path)
    answers, asked = [False, True], []

    def confirm(title, text, verb):
        asked.append(text)
        return answers.pop(0)

    page.confirm = confirm
    with FakeOllama() as server:
        window.settings.setValue("ollama/host", server.host)
        page.name_edit.setText("pip-taken")
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: page.ollama_job.done, timeout=120000)
        assert server.models["pip-taken:latest"]["system"] is None

        page.system_edit.setPlainText("You are Pip, and you changed.")
        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)  # "No": nothing replaced
        qtbot.waitUntil(lambda: len(asked) == 1 and page.banner.kind == "warn", timeout=120000)
        assert "already has a model named pip-taken:latest" in asked[0]
        assert "another model name" in page.banner.text()
        assert server.models["pip-taken:latest"]["system"] is None

        qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)  # "Yes": replaced
        qtbot.waitUntil(lambda: len(asked) == 2 and page.ollama_job.done
                        and page.banner.kind == "ok", timeout=120000)
        assert "--replace" in page.ollama_job.worker.argv
        assert server.models["pip-taken:latest"]["system"] == "You are Pip, and you changed."


def test_without_ollama_the_app_shows_the_modelfile_folder_and_command(qtbot, window,
                                                                         tmp_path):
    from tests.ollama.fake_server import free_port

    page = window.pages["Export"]
    window.show_page("Export")
    _exported(page, tmp_path)
    window.settings.setValue("ollama/host", f"127.0.0.1:{free_port()}")  # nobody listens
    page.name_edit.setText("pip-offline")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: page.ollama_job.done, timeout=120000)
    assert page.ollama_job.state == "finished", page.banner.text()
    assert page.banner.kind == "warn" and "not running" in page.banner.text()
    result = page.ollama_job.worker.final_event.result
    folder = Path(result.modelfile_dir)
    assert (folder / "Modelfile").exists()
    assert "ollama create pip-offline" in page.ollama_result.toPlainText()
    assert str(folder) in page.ollama_result.toPlainText()


def test_quitting_during_a_run_asks_first_and_stops_it_cleanly(qtbot, window, fake_argv):
    page = window.pages["Train"]
    page._launch("Train fake", fake_argv("--steps", "3", "--then", "wait-stop"), "fake")
    qtbot.waitUntil(lambda: page.job.worker.last_checkpoint is not None, timeout=30000)
    asked = []
    window.confirm = lambda title, text, verb: asked.append((text, verb)) and False
    window.close()
    assert asked and "checkpoint" in asked[0][0] and asked[0][1] == "Stop and Quit"
    assert window.isVisible() and page.running  # "no": nothing stopped, nothing closed
    window.confirm = lambda title, text, verb: True
    window.close()
    qtbot.waitUntil(lambda: page.job.done, timeout=30000)
    assert page.job.state == "cancelled"
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)


def test_playground_streams_a_reply_from_the_base_model(qtbot, window, tiny_model):
    window.state.set_model(str(tiny_model("qwen2")))
    page = window.pages["Playground"]
    window.show_page("Playground")
    page.max_tokens.setValue(8)
    page.prompt.setPlainText("Hello there")
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)
    ends = []
    page.worker.reply_finished.connect(ends.append)
    qtbot.waitUntil(lambda: not page.busy(), timeout=120000)
    assert len(ends) == 1, page.left.text()
    assert page.left.turns[-1][0] == "Hello there"
    assert page.left.pieces >= 1  # streamed, not only delivered at the end
    from app.pages.playground import BLANK_REPLY

    reply = ends[0].result.text
    assert page.left.text() == (reply if reply.strip() else BLANK_REPLY)


def test_strict_data_stops_the_run_naming_the_file_and_line(qtbot, window, tiny_model, tmp_path):
    window.state.set_model(str(tiny_model("qwen2")))
    data = small_chat_dataset(tmp_path, n=20, bad_lines=1)
    before = data.read_bytes()
    window.state.set_data(str(data))
    window.pages["Data"].skip_box.setChecked(False)  # "Skip bad lines" off: strict
    page = start_training(qtbot, window, "strict-run", iters=5)
    assert "--strict" in page.job.worker.argv
    qtbot.waitUntil(lambda: page.job.done, timeout=120000)
    assert page.job.state == "failed"
    assert page.banner.kind == "error" and "chat.jsonl:2" in page.banner.text()
    assert data.read_bytes() == before
    assert page.start_button.isEnabled()
