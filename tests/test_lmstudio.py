"""LM Studio hand-off (issue 23): `tailor lmstudio --gguf FILE` and `tailor export ... --lmstudio`
put the GGUF where LM Studio looks (its home from ~/.lmstudio-home-pointer or ~/.lmstudio, the
models folder from settings.json's downloadsFolder), as a hard link or a copy, or through
`lms import` when it is on PATH; the user's file keeps its bytes and place, and a different file
of the same name is never overwritten. Every test runs on a temporary home folder."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from engine.atomic import sha256_file
from engine.cli import main as tailor
from engine.events import Job
from engine.lmstudio import lmstudio_home, models_folder, place_in_lmstudio


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no lms unless a test adds one
    return home


def gguf_file(folder: Path, name="my-style-q8_0.gguf", data=b"GGUF\x03\x00\x00\x00model") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_the_gguf_is_linked_into_the_default_models_folder_and_left_where_it_was(
        home, tmp_path, capsys):
    gguf = gguf_file(tmp_path / "exports")
    digest = sha256_file(gguf)
    assert tailor(["lmstudio", "--gguf", str(gguf), "--model", "my-style"]) == 0
    target = home / ".lmstudio" / "models" / "tailor" / "my-style" / gguf.name
    assert target.read_bytes() == gguf.read_bytes()
    assert os.path.samefile(target, gguf)  # a hard link: no second copy of the file
    assert sha256_file(gguf) == digest and gguf.is_file()
    out = capsys.readouterr().out
    assert f"LM Studio: {target} (hard link" in out and "tailor/my-style" in out


def test_the_models_folder_follows_the_pointer_and_downloads_folder(home, tmp_path):
    lm_home = tmp_path / "elsewhere" / "lm"
    (home / ".lmstudio-home-pointer").write_text(f"{lm_home}\n")
    assert lmstudio_home() == lm_home
    assert models_folder() == (lm_home / "models", "LM Studio's default")
    chosen = tmp_path / "big-disk" / "models"
    lm_home.mkdir(parents=True)
    (lm_home / "settings.json").write_text(json.dumps({"downloadsFolder": str(chosen),
                                                       "other": 1}))
    gguf = gguf_file(tmp_path / "exports")
    placed = place_in_lmstudio(gguf, job=Job("t"))
    assert Path(placed.path) == chosen / "tailor" / "my-style-q8_0" / gguf.name
    assert placed.models_folder_from == f"downloadsFolder in {lm_home / 'settings.json'}"


def test_a_different_file_of_the_same_name_is_kept_and_the_same_file_is_not_placed_twice(
        home, tmp_path):
    theirs = gguf_file(home / ".lmstudio" / "models" / "tailor" / "my-style", data=b"theirs")
    gguf = gguf_file(tmp_path / "exports")
    placed = place_in_lmstudio(gguf, model="my-style", job=Job("t"))
    assert theirs.read_bytes() == b"theirs"
    assert Path(placed.path) == home / ".lmstudio/models/tailor/my-style-2" / gguf.name
    assert placed.renamed and placed.model_key == "tailor/my-style-2"
    again = place_in_lmstudio(gguf, model="my-style", job=Job("t"))
    assert (again.path, again.method) == (placed.path, "already there")
    copy = tmp_path / "copy" / gguf.name  # the same bytes in another file count as the same
    copy.parent.mkdir()
    copy.write_bytes(gguf.read_bytes())
    assert place_in_lmstudio(copy, model="my-style", job=Job("t")).method == "already there"


@pytest.mark.skipif(not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev
                    == os.stat("/tmp").st_dev, reason="needs a second file system")
def test_across_file_systems_the_file_is_copied_without_a_temporary_left(home, tmp_path):
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        gguf = gguf_file(Path(other))
        placed = place_in_lmstudio(gguf, model="x", job=Job("t"))
        target = Path(placed.path)
        assert placed.method == "copy" and target.read_bytes() == gguf.read_bytes()
        assert not os.path.samefile(target, gguf)
        assert [p.name for p in target.parent.iterdir()] == [gguf.name]


def test_lms_on_path_imports_with_a_hard_link_into_the_chosen_folder(home, tmp_path,
                                                                       monkeypatch):
    # a stand-in for LM Studio's CLI: records its arguments and links as `lms import -L` does
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lms = bin_dir / "lms"
    lms.write_text("#!/bin/sh\n"
                   f'echo "$@" > {tmp_path}/lms-args\n'
                   'repo=""; prev=""; for a in "$@"; do [ "$prev" = "--user-repo" ] && repo="$a";'
                   ' prev="$a"; done\n'
                   'dir="$HOME/.lmstudio/models/$repo"; mkdir -p "$dir"\n'
                   'ln "$2" "$dir/$(basename "$2")"\n')
    lms.chmod(lms.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    gguf = gguf_file(tmp_path / "exports")
    placed = place_in_lmstudio(gguf, model="my-style", job=Job("t"))
    assert (tmp_path / "lms-args").read_text().split() == [
        "import", str(gguf), "--yes", "--hard-link", "--user-repo", "tailor/my-style"]
    assert placed.method == "lms import (hard link)"
    assert os.path.samefile(placed.path, gguf)


def test_a_file_that_is_not_a_gguf_is_refused(home, tmp_path, capsys):
    other = tmp_path / "notes.txt"
    other.write_text("x")
    assert tailor(["lmstudio", "--gguf", str(other)]) == 1
    assert "is not a .gguf file" in capsys.readouterr().err
    assert not (home / ".lmstudio").exists()


def test_a_missing_gguf_is_named_as_missing(home, tmp_path, capsys):
    assert tailor(["lmstudio", "--gguf", str(tmp_path / "gone.gguf")]) == 1
    err = capsys.readouterr().err
    assert f"GGUF file not found: {tmp_path / 'gone.gguf'}" in err and "Traceback" not in err
    assert not (home / ".lmstudio").exists()


@pytest.mark.slow
def test_export_lmstudio_places_the_verified_gguf(home, tiny_model, tmp_path, capsys):
    from tests.export.adapters import make_library_adapter

    make_library_adapter("style", tiny_model("llama3"))
    out = tmp_path / "style.gguf"
    assert tailor(["export", "--adapter", "style", "--quant", "q8_0", "--out", str(out),
                   "--lmstudio"]) == 0
    target = home / ".lmstudio" / "models" / "tailor" / "style" / "style.gguf"
    assert os.path.samefile(target, out)
    assert f"LM Studio: {target}" in capsys.readouterr().out
    assert tailor(["export", "--adapter", "style", "--out", str(tmp_path / "a.gguf"),
                   "--adapter-only", "--lmstudio"]) == 1
    assert "LM Studio does not load LoRA adapter files" in capsys.readouterr().err


def test_a_killed_copys_temporary_is_removed_by_the_next_placement(home, tmp_path, capsys):
    """A copy killed midway leaves `.NAME.gguf.tmp-XXXXXXXX` (the model's size) in LM Studio's
    folder; the next placement of that file holds the target's lock, so it is a dead job's at
    any age, and it is removed and named."""
    from engine.atomic import temp_sibling

    gguf = gguf_file(tmp_path / "exports")
    models, _ = models_folder()
    target = models / "tailor" / "x" / gguf.name
    target.parent.mkdir(parents=True)
    killed = temp_sibling(target)
    killed.write_bytes(b"GGUF half")
    mine = target.parent / "notes.txt"
    mine.write_text("the user's")
    assert tailor(["lmstudio", "--gguf", str(gguf), "--model", "x"]) == 0
    err = capsys.readouterr().err
    assert not killed.exists() and str(killed) in err
    assert target.read_bytes() == gguf.read_bytes() and mine.read_text() == "the user's"
