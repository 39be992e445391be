"""Issue 14: `tailor library delete` moves the adapter to the system Trash (recoverable); a Trash
that cannot take it refuses, naming `--permanently`, and leaves the adapter as it was."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine import library

from .conftest import REPO, snapshot_tree


def _adapter(name: str) -> Path:
    folder = library.adapter_path(name)
    (folder / "checkpoints" / "0000004").mkdir(parents=True)
    library.write_manifest(folder, {"name": name, "status": "finished"})
    (folder / "adapters.safetensors").write_bytes(os.urandom(4096))
    (folder / "adapter_config.json").write_text('{"fine_tune_type": "lora"}')
    (folder / "checkpoints" / "0000004" / "state.json").write_bytes(os.urandom(300))
    return folder


def _tailor(*args: str, data_home: Path, home: Path) -> tuple[int, list[dict], str]:
    """Run the engine in a process of its own: send2trash reads XDG_DATA_HOME at import, and
    the Trash it picks depends on the home folder's disk (HOME here shares the library's)."""
    home.mkdir(exist_ok=True)
    env = {**os.environ, "XDG_DATA_HOME": str(data_home), "HOME": str(home)}
    p = subprocess.run([sys.executable, "-m", "engine", *args, "--events", "-"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
    events = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return p.returncode, events, p.stderr


def test_a_deleted_adapter_arrives_in_the_trash_byte_for_byte(tmp_path):
    folder = _adapter("my style")
    before = snapshot_tree(folder)
    data_home = tmp_path / "xdg"
    rc, events, err = _tailor("library", "delete", "my style", data_home=data_home,
                              home=tmp_path / "home")
    assert rc == 0, err
    assert not folder.exists()
    assert [a.name for a in library.list_adapters()] == []
    trashed = data_home / "Trash" / "files" / "my style"
    assert snapshot_tree(trashed) == before  # every file, checkpoints included
    note = (data_home / "Trash" / "info" / "my style.trashinfo").read_text()
    assert f"Path={folder}".replace(" ", "%20") in note  # what "Restore" puts it back as
    result = events[-1]["result"]
    assert result == {"type": "library.change", "name": "", "path": str(trashed),
                      "deleted": "my style"}
    assert f"moved 'my style' to the Trash ({trashed}); restore it from there" in err


def test_a_trash_that_cannot_take_it_refuses_and_names_permanently(tmp_path):
    folder = _adapter("keep")
    before = snapshot_tree(folder)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the data folder should be")  # no Trash can be made there
    rc, events, err = _tailor("library", "delete", "keep", data_home=blocked,
                              home=tmp_path / "home")
    assert rc == 1, err
    assert "Traceback" not in err and "internal error" not in err
    failed = events[-1]
    assert failed["event"] == "failed"
    assert failed["message"].startswith("cannot move the adapter 'keep' to the Trash: ")
    assert failed["message"].endswith("; nothing was deleted")
    assert str(blocked) in failed["message"]
    assert failed["hint"] == ("delete it for good instead (it cannot be restored then): "
                              "tailor library delete keep --permanently")
    assert snapshot_tree(folder) == before  # never half-deleted
    assert blocked.read_text() == "a file where the data folder should be"

    rc, events, err = _tailor("library", "delete", "keep", "--permanently",
                              data_home=blocked, home=tmp_path / "home")
    assert rc == 0, err
    assert not folder.exists() and "deleted 'keep' permanently" in err
    assert events[-1]["result"] == {"type": "library.change", "name": "", "path": "",
                                    "deleted": "keep"}
    assert list(folder.parent.iterdir()) == []  # no '.keep.deleting' left either


def test_the_domain_function_says_where_the_adapter_went(tmp_path):
    folder = _adapter("api")
    gone = library.delete_adapter("api")  # this process's Trash: tests/conftest.py's folder
    assert not gone.permanently and gone.was == folder
    assert gone.trash is not None and gone.trash.name.startswith("api")
    assert (gone.trash / "adapters.safetensors").exists()
    assert str(gone.trash).startswith(os.environ["XDG_DATA_HOME"])


def test_a_move_refused_by_the_library_leaves_no_note_in_the_trash(tailor_home):
    from engine.events import TailorError
    from tests.faults import write_faults

    folder = _adapter("ro")
    before = snapshot_tree(folder)
    notes = Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "info"
    with write_faults(folder.parent, "read-only") as faults:
        try:
            library.delete_adapter("ro")
        except TailorError as e:
            message = e.message
    assert faults.fired  # the rename out of the library was refused
    assert message == (f"cannot delete {folder}: {folder.parent} is on a read-only file "
                       "system")  # the library's fault: --permanently would fail the same way
    assert snapshot_tree(folder) == before
    # send2trash writes its note before it moves the folder: that orphan is removed
    assert not any(f"Path={folder}" in n.read_text() for n in notes.glob("*.trashinfo"))
