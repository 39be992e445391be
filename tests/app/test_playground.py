"""Issue 14, Playground: side by side by default, Stop and Clear, temperature and system prompt
passed to the engine, the two columns' turns kept in step, and one `tailor generate --serve`
worker per loaded base for the life of the page (the adapter switched per request)."""
from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
from PySide6.QtCore import Qt

from app import commands
from app.pages.playground import BASE
from engine.generate import generate_text
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.train.conftest import write_toy_chat

pytestmark = [pytest.mark.gui]

LOAD = 120000  # ms: a cold worker imports MLX and loads the model (slow on a busy CI box)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """A library folder with the adapter "tuned" (LoRA on the tiny qwen2), trained once."""
    folder = tmp_path_factory.mktemp("trained") / "adapters"
    train_adapter(str(tiny_model("qwen2")), write_toy_chat(folder.parent / "toy.jsonl"),
                  "tuned", make_config(iters=30, learning_rate=2e-3, rank=8, dropout=0.0,
                                       eval_every=0), library_dir=folder)
    return folder


@pytest.fixture
def page(qtbot, tailor_home, trained, tiny_model):
    """The Playground on the tiny qwen2 with "tuned" in the library; its worker is stopped
    (or killed) at the end."""
    from app.pages.playground import PlaygroundPage
    from app.state import AppState

    shutil.copytree(trained, tailor_home / "adapters", dirs_exist_ok=True)
    state = AppState()
    state.set_model(str(tiny_model("qwen2")))
    p = PlaygroundPage(state)
    # Not qtbot.addWidget: it deletes the page (and the worker's QProcess) before teardown.
    yield p
    worker = p.worker
    p.shutdown()
    if worker is not None:
        try:
            qtbot.waitUntil(lambda: not worker.running, timeout=10000)
        except Exception:  # noqa: BLE001 - leave no process behind
            worker.proc.kill()
            qtbot.waitUntil(lambda: not worker.running, timeout=10000)
    p.close()
    p.deleteLater()


def gone(pid: int) -> bool:
    """The process ended and was reaped (QProcess waits for its child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def send(qtbot, page, text: str) -> None:
    page.prompt.setPlainText(text)
    qtbot.mouseClick(page.send_button, Qt.MouseButton.LeftButton)


def test_generate_command_passes_system_prompt_and_temperature():
    argv = commands.generate_command("m", "hi", system="Be brief.", temperature=0.7)
    assert argv[argv.index("--system") + 1] == "Be brief."
    assert argv[argv.index("--temperature") + 1] == "0.7"
    assert "--temperature" not in commands.generate_command("m", "hi")  # 0: engine default


def test_serve_command_keeps_stdin_for_the_requests():
    argv = commands.serve_command(adapter="tuned", python="py")
    assert argv == ["py", "-m", "engine", "generate", "--serve", "--adapter", "tuned", "--quiet"]
    assert commands.serve_command(model="/m", python="py")[5:7] == ["--model", "/m"]
    assert "--events" not in argv  # the runner would watch stdin for `stop` and take requests


def test_playground_stop_clear_and_aligned_columns(qtbot, page):
    assert page.side_by_side.isChecked() and page.adapter_box.currentData() == "tuned"
    page.system_edit.setText("Be brief.")
    page.temperature.setValue(0.5)
    page.max_tokens.setValue(8192)  # answers until stopped
    assert not page.stop_button.isEnabled() and not page.clear_button.isEnabled()

    page.side_by_side.setChecked(False)
    # The base model alone for this reply: the trained adapter learned to end its short toy
    # answers, so with it the reply could finish by itself before Stop is pressed.
    page.adapter_box.setCurrentIndex(page.adapter_box.findData(BASE))
    send(qtbot, page, "first")
    assert page.stop_button.isEnabled()
    qtbot.waitUntil(lambda: page.left.pieces >= 1, timeout=LOAD)
    qtbot.mouseClick(page.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    assert page.left.turns[-1][1].endswith("[stopped]")

    page.adapter_box.setCurrentIndex(page.adapter_box.findData("tuned"))
    page.side_by_side.setChecked(True)
    send(qtbot, page, "second")
    sent = [(r["adapter"], r["system"], r["temperature"]) for r in page.worker.sent[-2:]]
    assert sent == [(None, "Be brief.", 0.5), ("tuned", "Be brief.", 0.5)]
    assert len(page.left.turns) == len(page.right.turns) == 2
    assert page.right.turns[0] == ("first", "(asked in the other column only)")
    qtbot.waitUntil(lambda: page.left.pieces >= 1, timeout=20000)
    page.stop()
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    assert page.right.turns[-1][1].endswith("[stopped]")  # stopped while still queued
    assert page.clear_button.isEnabled()
    qtbot.mouseClick(page.clear_button, Qt.MouseButton.LeftButton)
    assert page.left.turns == [] and page.right.turns == []
    assert page.left.view.toPlainText() == ""


def test_a_second_message_starts_no_new_process(qtbot, page, monkeypatch):
    # Counted where every engine process starts, so the count means the same on any page.
    from app.worker import EngineWorker

    starts = []
    start = EngineWorker.start
    monkeypatch.setattr(EngineWorker, "start",
                        lambda self: (starts.append(self.argv), start(self))[1])
    page.select_adapter("tuned")  # side by side: the base and the adapter answer each
    page.max_tokens.setValue(4)
    for text in ("first", "second", "third"):
        send(qtbot, page, text)
        qtbot.waitUntil(lambda: not page.stop_button.isEnabled(), timeout=LOAD)
    assert len(starts) == 1, starts
    assert [t[0] for t in page.left.turns] == [t[0] for t in page.right.turns] == \
        ["first", "second", "third"]
    assert not any(t[1].endswith("]") for t in page.left.turns + page.right.turns)


def test_a_second_message_reuses_the_loaded_worker_and_survives_an_error(qtbot, page,
                                                                        tailor_home,
                                                                        tiny_model):
    # "broken": trained on the same base, but its configuration does not fit its weights.
    broken = tailor_home / "adapters" / "broken"
    shutil.copytree(tailor_home / "adapters" / "tuned", broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    config["lora_parameters"]["rank"] = 4
    (broken / "adapter_config.json").write_text(json.dumps(config))
    page.refresh_adapters()
    page.select_adapter("tuned")
    page.max_tokens.setValue(8)
    prompt = "Tell me about the book number 999."
    base = generate_text(str(tiny_model("qwen2")), None, prompt, max_tokens=8)
    tuned = generate_text(None, "tuned", prompt, max_tokens=8)
    assert base != tuned

    send(qtbot, page, prompt)
    worker = page.worker
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    pid = worker.pid()
    assert pid > 0 and page.workers_started == 1
    send(qtbot, page, prompt)
    assert page.worker is worker and page.workers_started == 1  # no new process
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    assert worker.pid() == pid
    from app.pages.playground import BLANK_REPLY

    shown = base if base.strip() else BLANK_REPLY
    assert page.left.turns[-1][1] == page.left.turns[0][1] == shown
    assert page.right.turns[-1][1] == page.right.turns[0][1] == tuned

    page.select_adapter("broken")  # same base: the same worker is asked
    page.side_by_side.setChecked(False)
    send(qtbot, page, prompt)
    assert page.worker is worker
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    assert "does not fit the loaded model" in page.left.turns[-1][1]
    assert "does not fit the loaded model" in page.banner.plain_text()
    page.select_adapter("tuned")
    send(qtbot, page, prompt)
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    assert page.left.turns[-1][1] == tuned
    assert page.worker is worker and worker.pid() == pid and page.workers_started == 1


def test_a_crashed_worker_is_restarted_with_a_banner(qtbot, page):
    page.max_tokens.setValue(4)
    page.side_by_side.setChecked(False)
    send(qtbot, page, "hello")
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    first = page.worker
    pid = first.pid()
    os.kill(pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: page.workers_started == 2, timeout=20000)
    assert "stopped unexpectedly" in page.banner.plain_text()
    assert "loading the model" in page.banner.plain_text()
    assert page.worker is not first
    send(qtbot, page, "hello again")
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    assert page.worker.pid() not in (0, pid) and page.left.turns[-1][0] == "hello again"
    assert not page.left.turns[-1][1].endswith("]")  # answered, no error


def test_the_worker_stops_when_the_model_changes_and_when_the_window_closes(qtbot, page,
                                                                           tiny_model):
    page.select_adapter("")  # the base model alone: the Model page's model
    page.max_tokens.setValue(4)
    send(qtbot, page, "hello")
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    first = page.worker
    assert first.argv[first.argv.index("--model") + 1] == str(tiny_model("qwen2"))
    pid = first.pid()
    page.state.set_model(str(tiny_model("llama3")))
    assert page.worker is None  # its memory is freed now, not at the next message
    qtbot.waitUntil(lambda: gone(pid), timeout=20000)
    send(qtbot, page, "hello")
    second = page.worker
    assert second.argv[second.argv.index("--model") + 1] == str(tiny_model("llama3"))
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    pid = second.pid()
    page.show()
    qtbot.waitExposed(page)
    page.window().close()
    qtbot.waitUntil(lambda: gone(pid), timeout=20000)
    assert page.worker is None


def test_the_first_message_says_the_model_loads_and_training_unloads_it(qtbot, page,
                                                                        fake_argv):
    page.max_tokens.setValue(4)
    page.side_by_side.setChecked(False)
    send(qtbot, page, "hello")
    assert page.banner.text().startswith("Loading the model")
    qtbot.waitUntil(lambda: not page.busy(), timeout=LOAD)
    assert page.banner.text() == ""  # cleared once it was loaded
    send(qtbot, page, "again")
    assert page.banner.text() == ""  # loaded: nothing to wait for
    qtbot.waitUntil(lambda: not page.busy(), timeout=20000)
    worker = page.worker
    pid = worker.pid()
    job = page.state.queue.submit("Train tuned-2", fake_argv("--steps", "3"), heavy=True)
    qtbot.waitUntil(lambda: job.done, timeout=20000)
    assert page.worker is None and "unloaded" in page.banner.plain_text()
    assert "Train tuned-2" in page.banner.plain_text()
    qtbot.waitUntil(lambda: gone(pid), timeout=20000)
