"""A command started with a closed standard stream still works (engine/stdio.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _close(fd: int):
    return lambda: os.close(fd)


@pytest.mark.parametrize("entry", [["-m", "engine"], ["-m", "app.launcher"]],
                         ids=["python -m engine", "tailor"])
def test_model_info_with_stdin_closed_loads_the_weights(entry, tiny_model):
    # Before: fd 0 went to the weights file and MLX took it for a failed open ("internal
    # error: RuntimeError: [load_safetensors] Failed to open file").
    folder = tiny_model("qwen2")
    proc = subprocess.run([sys.executable, *entry, "model", "info", str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, preexec_fn=_close(0))
    assert proc.returncode == 0, proc.stderr
    assert "parameters" in proc.stdout.lower()
    assert "Failed to open file" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_closed_stdout_is_not_a_crash(tiny_model):
    folder = tiny_model("qwen2")
    proc = subprocess.run([sys.executable, "-m", "engine", "model", "info", str(folder)],
                          cwd=REPO, stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=_close(1))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
