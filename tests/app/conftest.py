"""App test helpers: the fake engine worker and screenshot checks."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")


@pytest.fixture
def fake_argv():
    """``fake_argv("--steps", "5")`` -> argv of a replaying stand-in worker."""
    def make(*args: str) -> list[str]:
        return [sys.executable, str(FAKE_ENGINE), *args]
    return make
