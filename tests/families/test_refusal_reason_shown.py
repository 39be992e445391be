"""`tailor model info` and the Model page say why a refused family does not export to GGUF
(issue 17: they said "not supported" without the reason from engine/capabilities.py)."""
from __future__ import annotations

import pytest

from engine.capabilities import UNSUPPORTED
from tests.conftest import edited_copy


@pytest.mark.parametrize("model_type", ["mistral3"])
def test_model_page_gives_the_refusal_reason(model_type, tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = edited_copy(tiny_model("qwen3"), tmp_path / model_type,
                         config={"model_type": model_type})
    shown = describe_model(folder)["gguf"]
    assert shown.startswith("no: ") and UNSUPPORTED[model_type].reason in shown


def test_model_page_gives_the_gemma3_vision_reason(tiny_model, tmp_path):
    from app.pages.model import describe_model

    folder = edited_copy(tiny_model("qwen3"), tmp_path / "gemma3", config={
        "model_type": "gemma3", "text_config": {"hidden_size": 64}})
    assert "only the text model (gemma3_text)" in describe_model(folder)["gguf"]


def test_model_info_gives_the_refusal_reason(tiny_model, tmp_path, monkeypatch, capsys):
    """mlx-lm loads the tiny Qwen3; the capability check sees a Mistral 3 (with vision) config
    (the reason comes from the config alone)."""

    from engine.models import cli

    real_read = cli.read_config
    monkeypatch.setattr(cli, "read_config",
                        lambda f: {**real_read(f), "model_type": "mistral3"})
    folder = tiny_model("qwen3")
    info = cli.model_info(folder)
    reason = UNSUPPORTED["mistral3"].reason
    assert info["gguf_export"] is False and info["gguf_export_reason"] == reason
    # the typed result the app and --events readers get carries the reason too
    from engine.results import ModelInfo

    assert ModelInfo.from_dict(info).gguf_export_reason == reason
    text = cli.format_model_info(folder, info)
    assert f"GGUF export   not supported: {reason} (supported: " in text


def test_model_info_supported_family_has_no_reason(tiny_model):
    from engine.models import cli

    folder = tiny_model("qwen3")
    info = cli.model_info(folder)
    assert info["gguf_export"] is True and info["gguf_export_reason"] == ""
    assert "GGUF export   supported\n" in cli.format_model_info(folder, info) + "\n"
