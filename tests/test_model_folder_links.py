"""Links in a model folder (issue 11): a file that resolves outside the folder (or, for a
Hugging Face cache snapshot, outside the repo's blob store) is never read, copied, embedded or
loaded, and the user is told which were skipped. The private files and the model folder are
byte-identical afterwards."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from engine.cli import main
from engine.events import Log, TailorError
from engine.models.folder_files import model_files, readable_view

SECRET = "PRIVATE-7f3c91-do-not-leak"
LINKED = ("special_tokens_map.json", "merges.txt", "chat_template.jinja")


def _tree(folder: Path) -> dict[str, object]:
    """Every entry under ``folder``: a link's target text, a file's bytes (links not followed)."""
    out: dict[str, object] = {}
    for p in sorted(folder.rglob("*")):
        key = str(p.relative_to(folder))
        if p.is_symlink():
            out[key] = ("link", os.readlink(p))
        elif p.is_file():
            out[key] = p.read_bytes()
    return out


@pytest.fixture
def private(tmp_path) -> Path:
    folder = tmp_path / "private"
    folder.mkdir()
    (folder / "special_tokens_map.json").write_text(json.dumps({"bos_token": SECRET}))
    (folder / "merges.txt").write_text(f"#version: 0.2\n{SECRET} x\n")
    (folder / "chat_template.jinja").write_text(
        "{{ '" + SECRET + "' }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    return folder


def _link_private(base: Path, private: Path) -> None:
    for name in LINKED:
        (base / name).unlink(missing_ok=True)
        os.symlink(private / name, base / name)


@pytest.fixture
def linked_model(tiny_model, tmp_path, private) -> Path:
    """A qwen2 tiny model whose special_tokens_map.json, merges.txt and chat_template.jinja are
    links to private files outside the folder."""
    base = tmp_path / "base"
    shutil.copytree(tiny_model("qwen2"), base)
    _link_private(base, private)
    return base


def _logs(events: list) -> str:
    return "\n".join(e.message for e in events if isinstance(e, Log) and e.level == "warning")


def test_listing_skips_links_out_of_the_folder_and_keeps_links_inside(tmp_path, private):
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "real.jinja").write_text("x")
    os.symlink("sub/real.jinja", folder / "inside.jinja")
    os.symlink(private / "merges.txt", folder / "merges.txt")
    os.symlink(private / "nowhere", folder / "broken.json")
    os.symlink("../private", folder / "outside_dir")
    (folder / ".cache").mkdir()
    files = model_files(folder)
    assert sorted(files.files) == ["config.json", "inside.jinja", "sub/real.jinja"]
    reasons = {s.name: s.reason for s in files.skipped}
    assert reasons["merges.txt"] == f"a link to {private / 'merges.txt'}, outside the model folder"
    assert reasons["broken.json"] == "a broken link"
    assert "outside the model folder" in reasons["outside_dir"]
    assert "merges.txt" in files.note() and "broken.json" in files.note()
    with readable_view(folder, files) as view:
        assert sorted(p.name for p in view.iterdir()) == ["config.json", "inside.jinja", "sub"]
    assert not view.exists()  # the temporary view is removed


def test_fuse_copies_no_private_file_and_says_what_it_skipped(tiny_model, tmp_path, private):
    from engine.fuse import fuse_adapter
    from tests.export.adapters import make_library_adapter

    base = tmp_path / "base"
    shutil.copytree(tiny_model("qwen2"), base)
    make_library_adapter("linked", base)
    _link_private(base, private)
    before, before_private = _tree(base), _tree(private)
    events: list = []
    out = fuse_adapter("linked", tmp_path / "fused", report=events.append)
    for p in out.rglob("*"):
        assert not p.is_symlink()
        assert SECRET.encode() not in p.read_bytes(), p.name
    assert not any((out / name).exists() for name in LINKED)
    assert (out / "tokenizer.json").exists()  # the real tokenizer files are still copied
    warning = _logs(events)
    for name in LINKED:
        assert f"{name} (a link to {private / name}, outside the model folder)" in warning
    record = json.loads((out / "tailor_fused.json").read_text())
    assert sorted(s.split(" ")[0] for s in record["skipped_base_files"]) == sorted(LINKED)
    assert _tree(base) == before and _tree(private) == before_private


def test_export_embeds_no_private_template(linked_model, tmp_path, private, capsys):
    before, before_private = _tree(linked_model), _tree(private)
    out = tmp_path / "out.gguf"
    rc = main(["export", "--model", str(linked_model), "--quant", "q8_0", "--out", str(out)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert SECRET.encode() not in out.read_bytes()
    # the template in the GGUF is the model's own (tokenizer_config.json), not the linked one
    assert b"<|im_start|>" in out.read_bytes()
    assert "chat_template.jinja (a link to" in cap.err and "merges.txt (a link to" in cap.err
    record = json.loads(out.with_name(out.name + ".json").read_text())
    assert any(s.startswith("chat_template.jinja") for s in
               record["metadata"]["skipped_base_files"])
    assert "Traceback" not in cap.err
    assert _tree(linked_model) == before and _tree(private) == before_private


def test_data_check_preview_does_not_use_the_linked_template(linked_model, tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"answer {i}"}]}) + "\n" for i in range(4)))
    rc = main(["data", "check", str(data), "--model", str(linked_model), "--preview", "2"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert SECRET not in cap.out and "<|im_start|>" in cap.out
    assert "chat_template.jinja (a link to" in cap.err


def test_a_weight_file_linked_outside_is_refused(tiny_model, tmp_path, capsys):
    base = tmp_path / "base"
    shutil.copytree(tiny_model("qwen2"), base)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (base / "model.safetensors").rename(elsewhere / "model.safetensors")
    os.symlink(elsewhere / "model.safetensors", base / "model.safetensors")
    before = _tree(base)
    for argv in (["model", "info", str(base)],
                 ["generate", "--model", str(base), "--prompt", "hi", "--max-tokens", "2"],
                 ["export", "--model", str(base), "--out", str(tmp_path / "x.gguf")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert (f"{base / 'model.safetensors'} is not loaded: a link to "
                f"{elsewhere / 'model.safetensors'}, outside the model folder") in err, err
        assert "Traceback" not in err
    from engine.models.load import load_model

    with pytest.raises(TailorError, match="is not loaded: a link to"):
        load_model(base)
    assert not (tmp_path / "x.gguf").exists()
    assert _tree(base) == before


def _hf_cache_copy(src: Path, hub: Path) -> Path:
    """``src`` laid out as huggingface_hub caches it: snapshot files are relative links into
    the repo's blobs/ (named by content hash)."""
    import hashlib

    repo = hub / "models--o--n"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        data = f.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (repo / "blobs" / sha).write_bytes(data)
        os.symlink(f"../../blobs/{sha}", snap / f.name)
    return snap


def test_hugging_face_cache_snapshot_links_into_blobs_still_work(tiny_model, tmp_path, capsys):
    snap = _hf_cache_copy(tiny_model("qwen2"), tmp_path / "hub")
    files = model_files(snap)
    assert not files.skipped and "tokenizer_config.json" in files.files
    out = tmp_path / "cached.gguf"
    rc = main(["export", "--model", str(snap), "--quant", "q8_0", "--out", str(out),
               "--no-verify"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert b"<|im_start|>" in out.read_bytes() and "not read" not in cap.err
    # a snapshot link that leaves the repo's blob store is still skipped
    secret = tmp_path / "secret.jinja"
    secret.write_text(SECRET)
    os.symlink(secret, snap / "chat_template.jinja")
    assert [s.name for s in model_files(snap).skipped] == ["chat_template.jinja"]


def test_ollama_fallback_template_is_not_read_through_a_link(linked_model):
    from engine.ollama.handoff import derive_template

    cfg_path = linked_model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("chat_template")  # so the folder's chat_template.jinja would be the template
    cfg_path.write_text(json.dumps(cfg))
    events: list = []
    template, _facts = derive_template(None, linked_model, report=events.append)
    assert SECRET not in json.dumps(template.__dict__, default=str)
    assert "chat_template.jinja (a link to" in _logs(events)


def test_model_info_lists_the_files_it_did_not_read(linked_model, private, capsys):
    assert main(["model", "info", str(linked_model)]) == 0
    out = capsys.readouterr().out
    for name in LINKED:
        assert f"  not read      {name} (a link to {private / name}, outside the model folder)" \
            in out
    assert main(["model", "info", str(linked_model), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert sorted(s.split(" ")[0] for s in info["skipped_files"]) == sorted(LINKED)


def test_training_start_records_the_files_not_read(linked_model, private, tmp_path, capsys):
    from tests.train.conftest import write_toy_chat

    before, before_private = _tree(linked_model), _tree(private)
    data = write_toy_chat(tmp_path / "toy.jsonl", n=8)
    events = tmp_path / "events.jsonl"
    assert main(["train", "--model", str(linked_model), "--data", str(data), "--name", "l",
                 "--iters", "1", "--batch-size", "1", "--events", str(events)]) == 0
    assert "chat_template.jinja (a link to" in capsys.readouterr().err
    started = next(e for e in map(json.loads, events.read_text().splitlines())
                   if e["event"] == "started")
    (note,) = started["info"]["model_notes"]
    assert note.startswith(f"not read from {linked_model}: ") and "merges.txt (a link" in note
    assert _tree(linked_model) == before and _tree(private) == before_private
