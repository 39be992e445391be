"""Library → Publish… (issue 23): the dialog lists the files (`tailor push --dry-run`, a real
worker) before Publish can be pressed, a changed option asks for the list again, and Publish
runs the real `tailor push` against a stand-in Hub on 127.0.0.1."""
from __future__ import annotations

import pytest
from PySide6.QtCore import Qt

from engine.library import read_manifest, write_manifest
from tests.export.adapters import make_library_adapter
from tests.hub.fake_hub import FakeHub

pytestmark = pytest.mark.gui


def test_publish_shows_the_files_first_then_uploads(window, qtbot, tiny_model, monkeypatch):
    folder = make_library_adapter("style", tiny_model("llama3"))
    manifest = read_manifest(folder)
    manifest["loss_history"] = {"train": [[1, 3.0], [2, 2.0]], "valid": []}
    write_manifest(folder, manifest)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)  # the workers inherit these
        monkeypatch.setenv("HF_TOKEN", hub.token)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        library = window.pages["Library"]
        library.refresh()
        assert library.select("style")
        assert library.publish_button.isEnabled()
        qtbot.mouseClick(library.publish_button, Qt.MouseButton.LeftButton)
        dialog = library.publish_dialog
        assert not dialog.publish_button.isEnabled()
        dialog.repo_edit.setText("me/style")
        qtbot.mouseClick(dialog.list_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.publish_button.isEnabled(), timeout=60000)
        assert "adapters.safetensors" in dialog.files_view.toPlainText()
        assert "loss.png" in dialog.files_view.toPlainText()
        assert hub.log == []  # listing sends nothing
        dialog.peft_box.setChecked(True)  # another option: the list no longer confirms it
        assert not dialog.publish_button.isEnabled()
        qtbot.mouseClick(dialog.list_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: dialog.publish_button.isEnabled(), timeout=60000)
        assert "adapter_model.safetensors" in dialog.files_view.toPlainText()
        assert dialog.publish_button.text() == "Publish 6 files to me/style"
        qtbot.mouseClick(dialog.publish_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "Published" in dialog.banner.text(), timeout=120000)
        assert sorted(hub.repos["me/style"]["files"]) == [
            "README.md", "adapter_config.json", "adapter_model.safetensors", "loss.png",
            "mlx/adapter_config.json", "mlx/adapters.safetensors"]
        dialog.close()
