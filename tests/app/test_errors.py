"""Issue 14: errors read as sentences with a hint. No Python exception text and no literal
markup on screen; a button that does nothing says what to do; a disabled one says why."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from .test_state import replay

pytestmark = [pytest.mark.gui]


def _model_page(qtbot):
    from app.pages.model import ModelPage
    from app.state import AppState

    page = ModelPage(AppState())
    qtbot.addWidget(page)
    return page


@pytest.mark.parametrize("ending", ["raw-failure", "crash"])
def test_an_offline_download_reads_as_a_sentence_with_a_hint(qtbot, tmp_path, fake_argv,
                                                            ending):
    page = _model_page(qtbot)
    raw = ("ConnectionError: HTTPSConnectionPool(host='huggingface.co', port=443): Max retries "
           "exceeded with url: /api/models<br>(Caused by NewConnectionError)")
    if ending == "raw-failure":
        stream = replay(tmp_path, "dl", [{"event": "failed", "job": "model", "message": raw,
                                          "error_type": "ConnectionError"}])
        argv = fake_argv("--replay", str(stream), "--then", "exit:1")
    else:  # the worker dies printing a traceback
        argv = fake_argv("--steps", "0", "--then", "die")
    page.download_command = lambda repo: argv
    page.download("mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    qtbot.waitUntil(lambda: page.job.done, timeout=20000)
    shown = page.banner.plain_text()
    assert page.banner.kind == "error"
    assert shown.startswith("Could not download mlx-community/Qwen2.5-0.5B-Instruct-4bit:")
    assert "check the internet connection" in shown and "resumes" in shown
    for raw_bit in ("ConnectionError", "MemoryError", "Traceback", "<br>", "HTTPSConnection"):
        assert raw_bit not in shown, shown
    assert page.download_button.isEnabled()


def test_the_engines_offline_message_keeps_its_own_hint(qtbot, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    page = _model_page(qtbot)
    page.download("mlx-community/Qwen2.5-0.5B-Instruct-4bit")
    qtbot.waitUntil(lambda: page.job.done, timeout=60000)
    shown = page.banner.plain_text()
    assert "downloads are off" in shown and "\nconnect to the internet" in shown
    assert "<br>" not in shown


def test_download_with_nothing_selected_says_what_to_do(qtbot):
    page = _model_page(qtbot)
    page.curated.setCurrentItem(None)
    page.edit.clear()
    qtbot.mouseClick(page.download_button, Qt.MouseButton.LeftButton)
    assert page.job is None
    assert page.banner.kind == "warn" and "select one of the suggested models" in \
        page.banner.plain_text()


def test_a_disabled_send_to_ollama_says_why(qtbot, window, tmp_path):
    from .test_app import _exported

    page = window.pages["Export"]
    window.show_page("Export")
    assert not page.send_button.isEnabled()
    assert "Write a GGUF first" in page.send_button.toolTip()
    assert page.send_reason.isVisible() and "Write a GGUF first" in page.send_reason.text()
    _exported(page, tmp_path)
    assert page.send_button.isEnabled() and not page.send_reason.isVisible()
    page._on_exported({"path": str(tmp_path / "x.gguf"), "size_bytes": 1,
                       "verification": {"passed": False, "checks": []}})
    assert not page.send_button.isEnabled()
    assert page.send_reason.isVisible() and "did not pass verification" in \
        page.send_reason.text()
    assert page.send_button.toolTip() == page.send_reason.text()
