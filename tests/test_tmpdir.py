"""A TMPDIR naming a missing folder: one clear message naming TMPDIR and the folder, with a hint,
instead of MLX's "internal error: ... temp_directory_path: No such file or directory"."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO


def _tailor(*args: str, tmpdir: str) -> tuple[int, dict, str]:
    env = {**os.environ, "TMPDIR": tmpdir}
    p = subprocess.run([sys.executable, "-m", "engine", *args, "--events", "-"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    last = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
    return p.returncode, last, p.stderr


@pytest.mark.parametrize("kind", ["missing", "a file"])
def test_a_bad_tmpdir_is_named_with_a_hint(kind, tiny_model, tmp_path):
    folder = tmp_path / "gone" / "tmp"
    why = "does not exist"
    if kind == "a file":
        folder = tmp_path / "tmpfile"
        folder.write_text("")
        why = "is not a folder"
    rc, failed, err = _tailor("generate", "--model", str(tiny_model("qwen2")), "--prompt", "hi",
                              "--max-tokens", "2", tmpdir=str(folder))
    assert rc == 1, err
    assert "internal error" not in err and "temp_directory_path" not in err
    assert failed["event"] == "failed"
    assert failed["message"] == (f"the temporary folder {folder} (set by the TMPDIR environment "
                                 f"variable) {why}; Tailor and MLX write temporary files there")
    assert failed["hint"].startswith(f"create it (mkdir -p {folder}), point TMPDIR at a folder "
                                     "that exists, or unset it")
    assert failed["code"] == "bad_input"
