"""Export page: "Open in LM Studio" (issue 23) runs the real `tailor lmstudio` worker on the
verified GGUF; the file lands in LM Studio's models folder of a temporary home, linked, and the
banner says where. Only a verified whole-model GGUF enables the button."""
from __future__ import annotations

import os

import pytest

from engine.results import ExportResult

pytestmark = pytest.mark.gui


def test_open_in_lmstudio_places_the_verified_gguf(window, qtbot, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # the worker inherits it
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no lms here: Tailor places it itself
    gguf = tmp_path / "style.gguf"
    gguf.write_bytes(b"GGUF\x03\x00\x00\x00tiny")
    page = window.pages["Export"]
    page._on_exported(ExportResult(path=gguf, quant="q8_0", source="style",
                                   verification={"passed": True, "checks": []}))
    assert page.lmstudio_button.isEnabled()
    qtbot.mouseClick(page.lmstudio_button, qtbot_button())
    target = home / ".lmstudio" / "models" / "tailor" / "style" / "style.gguf"
    qtbot.waitUntil(lambda: "In LM Studio" in page.banner.text(), timeout=60000)
    assert os.path.samefile(target, gguf)
    assert str(target) in page.banner.text() and "tailor/style" in page.banner.text()
    page._on_exported(ExportResult(path=gguf, kind="adapter",
                                   verification={"passed": True, "checks": []}))
    assert not page.lmstudio_button.isEnabled()  # LM Studio loads no adapter file alone
    page._on_exported(ExportResult(path=gguf, verification={"passed": False, "checks": []}))
    assert not page.lmstudio_button.isEnabled()


def qtbot_button():
    from PySide6.QtCore import Qt

    return Qt.MouseButton.LeftButton
