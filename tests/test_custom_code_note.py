"""A config.json ``auto_map`` asks transformers to run the model folder's own Python code.
Tailor never runs it (issue 11) and now says so where the model is described: `tailor model
info`, the data check report and the training run's Started info."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import TailorError
from tests.conftest import edited_copy

AUTO_MAP = {"AutoConfig": "configuration_x.XConfig",
            "AutoModelForCausalLM": "modeling_x.XForCausalLM"}
NOTE = ("config.json asks for custom code (auto_map: AutoConfig: configuration_x.XConfig, "
        "AutoModelForCausalLM: modeling_x.XForCausalLM); Tailor never runs code from a model "
        "folder and uses mlx-lm's own qwen2 implementation")


@pytest.fixture
def custom_code_model(tiny_model, tmp_path) -> Path:
    folder = edited_copy(tiny_model("qwen2"), tmp_path / "custom", config={"auto_map": AUTO_MAP})
    ran = tmp_path / "code-ran"
    for module in ("configuration_x.py", "modeling_x.py"):  # proof if it were ever executed
        (folder / module).write_text(f"open({str(ran)!r}, 'w').write('ran')\n")
    return folder


def test_model_info_says_custom_code_is_not_run(custom_code_model, tmp_path, capsys):
    assert main(["model", "info", str(custom_code_model)]) == 0
    assert f"  note          {NOTE}" in capsys.readouterr().out
    assert main(["model", "info", str(custom_code_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == [NOTE]
    assert not (tmp_path / "code-ran").exists()


def test_a_model_without_auto_map_has_no_note(tiny_model, capsys):
    assert main(["model", "info", str(tiny_model("qwen2"))]) == 0
    assert "note" not in capsys.readouterr().out


def test_data_check_report_and_training_start_say_so(custom_code_model, tmp_path, capsys):
    from tests.train.conftest import write_toy_chat

    data = write_toy_chat(tmp_path / "toy.jsonl", n=8)
    assert main(["data", "check", str(data), "--model", str(custom_code_model)]) == 0
    assert f"  note: {NOTE}" in capsys.readouterr().out
    events = tmp_path / "events.jsonl"
    assert main(["train", "--model", str(custom_code_model), "--data", str(data), "--name", "c",
                 "--iters", "1", "--batch-size", "1", "--events", str(events)]) == 0
    assert NOTE in capsys.readouterr().err  # the terminal view
    started = next(e for e in map(json.loads, events.read_text().splitlines())
                   if e["event"] == "started")
    assert started["info"]["model_notes"] == [NOTE]
    assert not (tmp_path / "code-ran").exists()


def test_mlx_lm_custom_module_key_is_refused_with_the_reason(tiny_model, tmp_path):
    from engine.models.load import load_model

    folder = edited_copy(tiny_model("qwen2"), tmp_path / "m", config={"model_file": "arch.py"})
    with pytest.raises(TailorError, match=r"names a custom model module \('arch.py'\) to build "
                                          "the architecture; Tailor never runs code"):
        load_model(folder)
