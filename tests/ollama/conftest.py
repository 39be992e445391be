"""Fixtures of the Ollama tests: a fake Ollama server on 127.0.0.1 and a user's GGUF."""
from __future__ import annotations

import pytest

from .fake_server import FakeOllama
from .ggufs import make_gguf


@pytest.fixture
def server():
    with FakeOllama() as s:
        yield s


@pytest.fixture
def gguf(tmp_path):
    """A qwen2 GGUF of the user's (a module that needs it in its own folder overrides this)."""
    return make_gguf(tmp_path / "my-model-f16.gguf", "qwen2")
