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
    assert "pip-q8_0.gguf" in text and "2.5 MB" in text and "Send to Ollama" in text
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
