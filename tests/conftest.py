"""Shared fixtures: a temporary TAILOR_HOME for every test, and the tiny model zoo.

Tiny models are built once per cache folder (default ~/.cache/tailor/tiny-models, or
$TAILOR_TINY_MODELS) and reused across the whole test run and across runs.
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `library delete` moves adapters to the Trash (freedesktop: $XDG_DATA_HOME/Trash, read when
# send2trash is imported): the suite's deletes go to a trash of its own, not the machine's.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="tailor-test-data-")
atexit.register(shutil.rmtree, os.environ["XDG_DATA_HOME"], True)

from engine.tiny_models import ALL_KINDS, cached_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TEST_OUTPUT = REPO / "test-output"


@pytest.fixture(autouse=True)
def tailor_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty library."""
    home = tmp_path / "tailor-home"
    home.mkdir()
    monkeypatch.setenv("TAILOR_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(kind)`` -> Path of the cached tiny model folder (see engine.tiny_models)."""

    def get(kind: str, **overrides) -> Path:
        return cached_tiny_model(kind, **overrides)

    return get


@pytest.fixture(params=ALL_KINDS)
def any_tiny_model(request, tiny_model) -> tuple[str, Path]:
    """Parametrized over every fixture architecture: (kind, folder)."""
    return request.param, tiny_model(request.param)


@pytest.fixture(scope="session")
def test_output() -> Path:
    """A folder for artifacts a person may want to look at (screenshots, reports)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT


def snapshot_tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes, to assert nothing was modified."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


DELETE = object()  # an ``edited_copy`` value that removes the key


def edited_copy(src: Path, dst: Path, **files: dict) -> Path:
    """Copy the model folder ``src`` to ``dst`` and update its JSON files: each keyword is a
    file stem (``config``, ``tokenizer_config``) with the keys to set (``DELETE`` removes one).
    The cached model itself is never touched."""
    import json
    import shutil

    shutil.copytree(src, dst)
    for stem, changes in files.items():
        path = dst / f"{stem}.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        for key, value in changes.items():
            if value is DELETE:
                data.pop(key, None)
            else:
                data[key] = value
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return dst
