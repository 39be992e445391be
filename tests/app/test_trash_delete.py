"""Issue 14: the Library page asks "Move to Trash" (Cancel the default) and says where the
adapter went and that it can be restored from the Trash."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import snapshot_tree
from .test_models import _adapter

pytestmark = [pytest.mark.gui]


def test_delete_moves_to_the_trash_and_says_it_can_be_restored(qtbot, tailor_home):
    from app.pages.library import LibraryPage
    from app.state import AppState

    _adapter(tailor_home, "old style")
    folder = tailor_home / "adapters" / "old style"
    before = snapshot_tree(folder)
    asked = []
    page = LibraryPage(AppState(), confirm=lambda title, text, verb: asked.append(
        (title, text, verb)) or True)
    qtbot.addWidget(page)
    assert page.select("old style")
    page._act("delete")
    assert asked == [("Move adapter to Trash",
                      "Move “old style” and its checkpoints to the Trash? You can restore it "
                      "from the Trash until it is emptied.", "Move to Trash")]
    assert not folder.exists() and page.model.row_of("old style") == -1
    # tests/conftest.py points XDG_DATA_HOME at the suite's own folder: its Trash
    trash = Path(os.environ["XDG_DATA_HOME"]) / "Trash" / "files"
    arrived = [p for p in trash.iterdir() if p.name.startswith("old style")
               and snapshot_tree(p) == before]
    assert len(arrived) == 1
    assert page.banner.kind == "ok"
    assert page.banner.text() == (f"Moved “old style” to the Trash ({arrived[0]}); it can be "
                                  "restored from the Trash.")
