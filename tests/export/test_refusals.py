"""Bad input for fuse and export: each refusal names the problem, and nothing is lost or left
behind (tests/conftest.py: snapshot_tree)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from engine.fuse import fuse_adapter
from tests.conftest import snapshot_tree

from .adapters import make_library_adapter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_copy(tiny_model, tmp_path) -> Path:
    folder = tmp_path / "base-model"
    shutil.copytree(tiny_model("qwen2"), folder)
    return folder


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_unsupported_architecture_is_refused_up_front(model_copy, tmp_path):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"], cfg["architectures"] = "mamba", ["MambaForCausalLM"]
    (model_copy / "config.json").write_text(json.dumps(cfg))
    before = snapshot_tree(model_copy)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, out_dir / "m.gguf", "f16")
    assert "'mamba'" in e.value.message and "MambaForCausalLM" in e.value.message
    assert "not supported" in e.value.message and "qwen2" in e.value.message
    assert snapshot_tree(model_copy) == before
    assert _leftovers(out_dir) == []


def test_pickle_only_weights_are_refused(model_copy, tmp_path):
    (model_copy / "model.safetensors").unlink()
    (model_copy / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    before = snapshot_tree(model_copy)
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, tmp_path / "m.gguf", "f16")
    assert "pickle" in e.value.message and "pytorch_model.bin" in e.value.message
    assert snapshot_tree(model_copy) == before
    assert not (tmp_path / "m.gguf").exists()


def test_output_inside_the_base_folder_is_refused(model_copy, tmp_path):
    before = snapshot_tree(model_copy)
    for out in (model_copy / "model.gguf", model_copy / "sub" / "model.gguf"):
        with pytest.raises(TailorError) as e:
            export_gguf(model_copy, out, "f16")
        assert "inside the base model folder" in e.value.message
    make_library_adapter("style", model_copy)
    before = snapshot_tree(model_copy)
    with pytest.raises(TailorError) as e:
        fuse_adapter("style", model_copy / "fused")
    assert "inside the base model folder" in e.value.message
    with pytest.raises(TailorError) as e:
        fuse_adapter("style", model_copy)
    assert "inside the base model folder" in e.value.message
    with pytest.raises(TailorError) as e:
        export_gguf("style", model_copy / "style.gguf", "f16")
    assert "inside the base model folder" in e.value.message
    assert snapshot_tree(model_copy) == before


def test_name_collision_leaves_the_existing_file_alone(model_copy, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"my earlier export")
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, out, "f16")
    assert "already exists" in e.value.message and "untouched" in e.value.message
    assert out.read_bytes() == b"my earlier export"
    assert _leftovers(tmp_path) == sorted(["model.gguf", "base-model", "tailor-home"])
    make_library_adapter("style", model_copy)
    (tmp_path / "fused").mkdir()
    (tmp_path / "fused" / "keep.txt").write_text("mine")
    with pytest.raises(TailorError) as e:
        fuse_adapter("style", tmp_path / "fused")
    assert "already exists" in e.value.message
    assert (tmp_path / "fused" / "keep.txt").read_text() == "mine"


def test_an_output_under_a_file_is_refused_and_the_file_kept(model_copy, tmp_path):
    notes = tmp_path / "notes"
    notes.write_text("mine")
    before = snapshot_tree(model_copy)
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, notes / "sub" / "model.gguf", "q8_0")
    assert e.value.message == (f"{notes} is a file, not a folder, so {notes / 'sub' / 'model.gguf'}"
                               " cannot be written; it was left untouched")
    assert e.value.hint == "choose an --out inside a folder"
    assert notes.read_text() == "mine" and snapshot_tree(model_copy) == before
    assert _leftovers(tmp_path) == sorted(["notes", "base-model", "tailor-home"])


def test_too_little_disk_is_refused_before_writing(model_copy, tmp_path):
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, out_dir / "m.gguf", "f32", free_bytes_fn=lambda p: 10_000)
    assert "not enough free disk space" in e.value.message and str(out_dir) in e.value.message
    assert _leftovers(out_dir) == []
    make_library_adapter("style", model_copy)
    adapter_before = snapshot_tree(Path(tmp_path / "tailor-home" / "adapters" / "style"))
    with pytest.raises(TailorError) as e:
        export_gguf("style", out_dir / "s.gguf", "q4_k_m", free_bytes_fn=lambda p: 10_000)
    assert "not enough free disk space" in e.value.message
    with pytest.raises(TailorError) as e:
        fuse_adapter("style", out_dir / "fused", free_bytes_fn=lambda p: 10_000)
    assert "not enough free disk space" in e.value.message
    assert _leftovers(out_dir) == []
    assert snapshot_tree(tmp_path / "tailor-home" / "adapters" / "style") == adapter_before


def test_unknown_adapter_and_bad_quant_are_clear(model_copy, tmp_path):
    with pytest.raises(TailorError) as e:
        export_gguf("nope", tmp_path / "x.gguf", "f16")
    assert "no adapter named 'nope'" in e.value.message
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, tmp_path / "x.gguf", "q3_k")
    assert "q3_k" in e.value.message
    with pytest.raises(TailorError) as e:
        export_gguf(model_copy, tmp_path / "x.bin", "f16")
    assert ".gguf" in e.value.message


def test_cli_refusal_is_a_failed_event_with_exit_status_1(model_copy, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "engine", "export", "--model",
                           str(model_copy), "--quant", "f16", "--out",
                           str(model_copy / "x.gguf"), "--events", "-", "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["event"] == "failed" and "inside the base model folder" in last["message"]


def test_cancel_mid_export_leaves_no_file_and_no_temporaries(model_copy, tmp_path):
    from engine.events import CancelToken, Cancelled, Progress

    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    make_library_adapter("style", model_copy)
    cancel = CancelToken()
    seen = []

    def report(event):
        seen.append(event)
        if isinstance(event, Progress) and event.stage == "export":
            cancel.cancel("user pressed stop")

    before = snapshot_tree(model_copy)
    with pytest.raises(Cancelled):
        export_gguf("style", out_dir / "s.gguf", "q8_0", report=report, cancel=cancel)
    assert _leftovers(out_dir) == []  # no GGUF, no temporary GGUF, no fused temp folder
    assert snapshot_tree(model_copy) == before
    assert any(isinstance(e, Progress) and e.stage == "fuse" for e in seen)


def test_sentencepiece_model_without_tokenizer_model_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "spm-no-model"
    shutil.copytree(tiny_model("llama2"), folder)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(TailorError) as e:
        export_gguf(folder, tmp_path / "x.gguf", "f16")
    assert "tokenizer kind not supported" in e.value.message
    assert "tokenizer.model" in e.value.hint
    assert not (tmp_path / "x.gguf").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
