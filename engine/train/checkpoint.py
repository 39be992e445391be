"""Resumable checkpoints: ``<adapter>/checkpoints/step-NNNNNNN/`` written under a temporary
name and renamed, so a killed process leaves either a whole checkpoint or none.

Each holds the adapter weights, the optimizer state and ``state.json`` (step, micro-batch
position, RNG key, config, dataset and base-model hashes, adapter shapes, loss history).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten

from ..atomic import atomic_path, save_safetensors
from ..events import TailorError

STATE = "state.json"
CHECKPOINT_SCHEMA = "tailor.checkpoint/1"


@dataclass
class LoadedCheckpoint:
    path: Path
    state: dict
    weights: dict[str, mx.array]
    optimizer: dict  # nested optimizer state tree


def checkpoints_dir(adapter_dir: Path) -> Path:
    return adapter_dir / "checkpoints"


def save_checkpoint(adapter_dir: Path, step: int, weights: dict[str, mx.array],
                    optimizer_state: dict, state: dict, keep: int) -> Path:
    root = checkpoints_dir(adapter_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"step-{step:07d}"
    opt_flat = dict(tree_flatten(optimizer_state))
    needed = _nbytes(weights) + _nbytes(opt_flat)
    with atomic_path(target, overwrite=True, needed_bytes=needed) as tmp:
        tmp.mkdir()
        save_safetensors(tmp / "adapters.safetensors", weights)
        save_safetensors(tmp / "optimizer.safetensors", opt_flat)
        (tmp / STATE).write_text(json.dumps({"schema": CHECKPOINT_SCHEMA, **state}, indent=1,
                                            default=str), encoding="utf-8")
    _prune(root, keep)
    return target


def save_best(adapter_dir: Path, weights: dict[str, mx.array], state: dict) -> Path:
    target = checkpoints_dir(adapter_dir) / "best"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, overwrite=True, needed_bytes=_nbytes(weights)) as tmp:
        tmp.mkdir()
        save_safetensors(tmp / "adapters.safetensors", weights)
        (tmp / STATE).write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    return target


def _nbytes(arrays: dict) -> int:
    return int(sum(v.nbytes for v in arrays.values()))


def list_checkpoints(adapter_dir: Path) -> list[Path]:
    root = checkpoints_dir(adapter_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if p.is_dir() and p.name.startswith("step-") and (p / STATE).exists())


def _prune(root: Path, keep: int) -> None:
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    # (what a killed process left is swept when the next run takes the lock: engine/sweep.py)


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    from ..models.safetensors_check import check_adapter_file

    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
        for name in ("adapters.safetensors", "optimizer.safetensors"):
            check_adapter_file(path / name)  # overlapping tensors load silently otherwise
        weights = mx.load(str(path / "adapters.safetensors"))
        opt_flat = mx.load(str(path / "optimizer.safetensors"))
    except (OSError, ValueError, RuntimeError) as e:
        raise TailorError(f"checkpoint {path} is unreadable: {e}") from e
    return LoadedCheckpoint(path, state, weights, tree_unflatten(list(opt_flat.items())))


def latest_checkpoint(adapter_dir: Path) -> LoadedCheckpoint | None:
    for p in reversed(list_checkpoints(adapter_dir)):
        try:
            return load_checkpoint(p)
        except TailorError:
            continue  # a damaged one (disk trouble): fall back to the one before
    return None


def rng_key() -> list[int]:
    """The MLX RNG key at save time (a record: the loop reseeds from (seed, micro-batch))."""
    return [int(v) for v in mx.random.state[0].tolist()]


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else os.unlink(path)
