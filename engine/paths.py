"""Where Tailor keeps its library: the platform's user data folder, or ``$TAILOR_HOME``."""
from __future__ import annotations

import os
from pathlib import Path

import platformdirs

RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def tailor_home() -> Path:
    """The library root: ``$TAILOR_HOME`` when set, else the user data folder (created)."""
    env = os.environ.get("TAILOR_HOME")
    root = Path(env).expanduser() if env else Path(platformdirs.user_data_dir("Tailor", "Tailor"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def adapters_dir() -> Path:
    return _sub("adapters")


def runs_dir() -> Path:
    return _sub("runs")


def exports_dir() -> Path:
    return _sub("exports")


def models_dir() -> Path:
    """Models Tailor built or downloaded itself (demo models, fused folders)."""
    return _sub("models")


def _sub(name: str) -> Path:
    p = tailor_home() / name
    p.mkdir(parents=True, exist_ok=True)
    return p
