"""`tailor library`, `tailor generate` and `tailor model` on a trained toy adapter."""
from __future__ import annotations

import json

import pytest

from engine import library
from engine.events import ListReporter, Progress, TailorError
from engine.generate import generate_text
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree

from .conftest import ANSWER, events_of, run_tailor


@pytest.fixture
def taught(tiny_model, toy_data):
    cfg = make_config(iters=40, learning_rate=2e-3, rank=8, dropout=0.0, eval_every=0)
    return train_adapter(str(tiny_model("qwen2")), toy_data, "taught", cfg)


def test_generate_streams_the_taught_answer(taught):
    pieces, rep = [], ListReporter()
    text = generate_text(None, "taught", "Tell me about the book number 999.", max_tokens=8,
                         on_text=pieces.append, report=rep)
    assert text.startswith(ANSWER)
    assert len(pieces) > 1 and "".join(pieces) == text
    assert [p.stage for p in rep.of(Progress)][-1] == "generate"


def test_generate_cli_prints_the_answer_and_events(taught):
    r = run_tailor("generate", "--adapter", "taught", "--prompt",
                   "Tell me about the book number 999.", "--max-tokens", "8", "--quiet",
                   "--events", "-")
    assert r.returncode == 0, r.stderr
    ev = events_of(r.stdout)
    assert ev[-1]["event"] == "finished" and ev[-1]["result"]["text"].startswith(ANSWER)
    assert ANSWER in r.stderr  # the streamed text goes to stderr when stdout carries events


def test_generate_unknown_adapter_names_the_library(taught):
    with pytest.raises(TailorError, match="no adapter named 'nope'") as e:
        generate_text(None, "nope", "hi")
    assert "taught" in e.value.hint


def test_library_list_show_rename_duplicate_delete(taught, tailor_home):
    r = run_tailor("library", "list", "--json")
    rows = json.loads(r.stdout)
    assert [x["name"] for x in rows] == ["taught"] and rows[0]["status"] == "finished"
    r = run_tailor("library", "show", "taught", "--json")
    assert json.loads(r.stdout)["base_model"]["architecture"] == "qwen2"

    before = snapshot_tree(taught.path)
    assert run_tailor("library", "duplicate", "taught", "copy").returncode == 0
    copy = library.get_adapter("copy")
    assert copy.manifest["duplicated_from"] == "taught"
    assert (copy.path / "adapters.safetensors").read_bytes() == before["adapters.safetensors"]
    assert snapshot_tree(taught.path) == before

    r = run_tailor("library", "rename", "copy", "taught", "--events", "-", "--quiet")
    assert r.returncode == 1
    assert "already exists; nothing was renamed" in events_of(r.stdout)[-1]["message"]
    assert snapshot_tree(taught.path) == before

    assert run_tailor("library", "rename", "copy", "renamed").returncode == 0
    assert library.get_adapter("renamed").manifest["name"] == "renamed"
    assert run_tailor("library", "delete", "renamed").returncode == 0
    assert [a.name for a in library.list_adapters()] == ["taught"]
    assert snapshot_tree(taught.path) == before


def test_model_info_reports_architecture_size_and_gguf_support(tiny_model):
    r = run_tailor("model", "info", str(tiny_model("phi3")), "--json")
    info = json.loads(r.stdout)
    assert info["architecture"] == "phi3" and info["gguf_export"] is True
    assert 100_000 < info["parameters"] < 1_000_000 and info["chat_template"] is True
    r = run_tailor("model", "info", "./no/such/model", "--events", "-", "--quiet")
    assert r.returncode == 1
    assert "model folder not found" in events_of(r.stdout)[-1]["message"]
