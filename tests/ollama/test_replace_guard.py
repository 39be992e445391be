"""`tailor ollama --modelfile-dir DIR --replace` replaces only a Modelfile folder Tailor wrote.

Pins the bug where --replace deleted whatever DIR was (a dataset folder, the adapter's own base
model). Every refusal must name the reason and leave DIR byte for byte as it was.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine import library
from engine.cli import main
from engine.events import TailorError, decode_event
from engine.ollama.handoff import write_folder
from engine.ollama.modelfile import MARKER, location_problem
from tests.conftest import snapshot_tree

from .ggufs import make_gguf


@pytest.fixture
def gguf(tmp_path):
    folder = tmp_path / "user-ggufs"
    folder.mkdir()
    return make_gguf(folder / "tuned-f16.gguf", "qwen2")


def register_adapter(name: str, base_dir, data_path) -> None:
    """A library adapter whose manifest records ``base_dir`` and ``data_path``, as training does."""
    folder = library.adapter_path(name)
    folder.mkdir(parents=True)
    library.write_manifest(folder, {"name": name, "status": "finished",
                                    "base_model": {"path": str(base_dir), "given": str(base_dir)},
                                    "dataset": {"path": str(data_path)}})


def replace_with_cli(capsys, gguf, folder) -> tuple[int, str]:
    code = main(["ollama", "--gguf", str(gguf), "--name", "m", "--offline", "--modelfile-dir",
                 str(folder), "--replace", "--events", "-", "--quiet"])
    out = capsys.readouterr().out
    return code, decode_event(out.splitlines()[-1]).message


@pytest.fixture
def user_project(tmp_path, tiny_model):
    """A base model (a copy of the tiny model, so a failure cannot harm the shared cache) and a
    dataset folder, both recorded by a library adapter."""
    base = tmp_path / "project" / "my-base-model"
    shutil.copytree(tiny_model("qwen2"), base)
    data = tmp_path / "project" / "my-dataset"
    data.mkdir()
    (data / "train.jsonl").write_text('{"text": "hello"}\n' * 8)
    (data / "valid.jsonl").write_text('{"text": "bye"}\n' * 2)
    register_adapter("pirate", base, data)
    return base, data


@pytest.mark.parametrize("which,words", [("data", "is the dataset of adapter 'pirate'"),
                                         ("base", "is the base model of adapter 'pirate'")])
def test_replace_refuses_a_dataset_or_base_model_folder(capsys, gguf, user_project, which,
                                                        words):
    base, data = user_project
    folder = data if which == "data" else base
    before = snapshot_tree(folder)
    code, message = replace_with_cli(capsys, gguf, folder)
    assert code == 1 and words in message and "left untouched" in message
    assert snapshot_tree(folder) == before
    assert not (folder / "Modelfile").exists()


def test_a_folder_inside_or_holding_a_dataset_is_refused(gguf, user_project, tmp_path):
    base, data = user_project
    inside = data / "ollama"  # does not exist yet: writing it would still change the dataset
    with pytest.raises(TailorError, match="is inside the dataset of adapter 'pirate'"):
        write_folder(inside, "m", gguf=gguf, replace=True)
    assert not inside.exists()
    with pytest.raises(TailorError, match="holds the (base model|dataset) of adapter 'pirate'"):
        write_folder(tmp_path / "project", "m", gguf=gguf, replace=True)
    assert (data / "train.jsonl").exists() and (base / "config.json").exists()


def test_replace_refuses_a_folder_of_user_files(capsys, gguf, tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "Modelfile").write_text("# Modelfile written by Tailor\nFROM ./x.gguf\n")
    (folder / "todo.txt").write_text("my notes")
    (folder / "sub" / "photo.jpg").write_bytes(b"\xff\xd8 not a real photo")
    before = snapshot_tree(folder)
    code, message = replace_with_cli(capsys, gguf, folder)
    assert code == 1
    assert "--replace only replaces a Modelfile folder Tailor wrote" in message
    assert f"has no {MARKER}" in message
    assert snapshot_tree(folder) == before


@pytest.mark.parametrize("where", ["", "adapters", "runs", "models"])
def test_replace_refuses_the_library_and_its_folders(capsys, gguf, tailor_home, where):
    target = tailor_home / where if where else tailor_home
    target.mkdir(exist_ok=True)
    (target / "keep.txt").write_text("library file")
    before = snapshot_tree(tailor_home)
    code, message = replace_with_cli(capsys, gguf, target)
    assert code == 1
    assert ("is the Tailor library" in message if not where else
            f"is the Tailor library's {where}/ folder" in message)
    assert snapshot_tree(tailor_home) == before


def test_replace_refuses_home_and_root(gguf, monkeypatch, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.txt").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(TailorError, match="is your home folder"):
        write_folder(home, "m", gguf=gguf, replace=True)
    # the root through the check alone: a broken guard must not get to try replacing "/"
    assert location_problem(Path("/")) == "is the root of the file system"
    assert snapshot_tree(home) == {"thesis.txt": b"years of work"}


def test_replace_works_on_a_folder_tailor_wrote(capsys, gguf, tailor_home):
    folder = tailor_home / "exports" / "ollama" / "m"
    write_folder(folder, "m", gguf=gguf)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["kind"] == "tailor-modelfile-folder" and marker["model"] == "m"
    assert set(marker["files"]) == {"Modelfile", "README.txt", "tuned-f16.gguf"}
    other = make_gguf(gguf.parent / "other-f16.gguf", "llama")
    code = main(["ollama", "--gguf", str(other), "--name", "m", "--offline", "--modelfile-dir",
                 str(folder), "--replace", "--quiet"])
    assert code == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MARKER, "Modelfile", "README.txt", "other-f16.gguf"])
    assert "FROM ./other-f16.gguf" in (folder / "Modelfile").read_text()
    assert gguf.exists() and other.exists()


@pytest.mark.parametrize("change", ["extra file", "edited Modelfile", "forged marker kind",
                                    "marker lists a user file", "swapped GGUF", "linked file"])
def test_a_changed_tailor_folder_is_refused(capsys, gguf, tmp_path, change):
    folder = tmp_path / "out"
    write_folder(folder, "m", gguf=gguf)
    marker_path = folder / MARKER
    marker = json.loads(marker_path.read_text())
    if change == "extra file":
        (folder / "my-notes.txt").write_text("added by the user")
        words = "holds files Tailor did not write there (my-notes.txt)"
    elif change == "edited Modelfile":
        with open(folder / "Modelfile", "a") as f:
            f.write("PARAMETER temperature 0.1\n")
        words = "holds Modelfile, which changed since Tailor wrote it"
    elif change == "forged marker kind":
        marker["kind"] = "something-else"
        marker_path.write_text(json.dumps(marker))
        words = "without Tailor's kind"
    elif change == "marker lists a user file":
        (folder / "thesis.docx").write_text("years of work")
        marker["files"]["thesis.docx"] = {"size": 13, "sha256": "0" * 64}
        marker_path.write_text(json.dumps(marker))
        words = "listing 'thesis.docx', which Tailor never writes"
    elif change == "swapped GGUF":
        (folder / "tuned-f16.gguf").unlink()
        make_gguf(folder / "tuned-f16.gguf", "llama")  # the user's own file under our name
        words = "holds tuned-f16.gguf, which changed since Tailor wrote it"
    else:
        (folder / "README.txt").unlink()
        (folder / "README.txt").symlink_to(gguf)  # pointing at a file of the user's
        words = "holds README.txt, which is not a plain file"
    before = snapshot_tree(folder)
    code, message = replace_with_cli(capsys, gguf, folder)
    assert code == 1 and words in message and "left untouched" in message
    assert snapshot_tree(folder) == before
    if change == "linked file":
        assert (folder / "README.txt").is_symlink()


def test_a_symlink_to_a_tailor_folder_is_refused(gguf, tmp_path):
    real = tmp_path / "real"
    write_folder(real, "m", gguf=gguf)
    before = snapshot_tree(real)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(TailorError, match="is a symbolic link"):
        write_folder(link, "m", gguf=gguf, replace=True)
    assert link.is_symlink() and snapshot_tree(real) == before
