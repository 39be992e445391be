"""At app start the library's stale temporaries are removed and the status bar says so."""
from __future__ import annotations

import os
import time


def test_app_start_sweeps_the_library(window, tailor_home):
    from app.main import sweep_at_start

    folder = tailor_home / "adapters" / "a"
    folder.mkdir(parents=True)
    stale = folder / ".adapters.safetensors.tmp-1a2b3c4d"
    stale.write_bytes(b"\0" * 1500)
    os.utime(stale, (time.time() - 7200,) * 2)
    user = folder / ".adapters.safetensors.tmp-mine"
    user.write_bytes(b"keep")
    message = sweep_at_start(window)
    assert not stale.exists() and user.exists()
    assert message == f"removed 1 stale temporary file left by an interrupted job (1.50 KB): {stale}"
    assert window.statusBar().currentMessage().startswith("Removed 1 stale temporary file")
