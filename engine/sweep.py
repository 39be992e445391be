"""Remove the temporaries a killed Tailor job left behind (a killed export can leave a fused
copy of the whole model), and say what was removed.

Only Tailor's own names are touched, each an exact pattern of the code that writes it:
``.<name>.tmp-<8 hex>[.safetensors|.old|.probe]`` (engine/atomic.py),
``.<name>.fused-<8 hex>`` / ``.<name>.dequantized-<8 hex>`` (the export's fused or
dequantized model), ``.<name>.tmp-copy`` / ``.<name>.deleting`` (the library), ``push-staging/<pid>-<12 hex>``
(a push's staged files, stale once that pid is gone). And only in
folders Tailor writes: the library's own folders (an adapter's folder, its checkpoints and
evaluations) and a job's output folder, never recursively into anything else.

A temporary is stale when the job that wrote it is gone: its lock (engine/locks.py) is not held
and it is older than ``STALE_AFTER``, or it belongs to the very target the calling job now
holds the lock of (then no live job can own it, whatever its age). A temporary under a live
lock is always kept. A folder's previous version (``…tmp-XXXXXXXX.old``) is removed only when
the folder it was replaced by exists (otherwise it is the only copy).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from . import locks
from .events import Log, Reporter, null_reporter
from .sizes import format_bytes

PUSH_STAGING = "push-staging"  # in the library: `tailor push` stages its files in <pid>-<id>/
STAGED = re.compile(r"^(?:(?P<pid>[0-9]+)-)?[0-9a-f]{12}$")
STALE_AFTER = 3600.0  # seconds: no Tailor job goes an hour without touching its temporary
TEMP_NAME = re.compile(
    r"^\.(?P<target>.+?)\.(?:tmp-[0-9a-f]{8}(?P<suffix>\.safetensors|\.old|\.probe)?"
    r"|(?:fused|dequantized)-[0-9a-f]{8}|tmp-copy|deleting)$")


@dataclass
class Removed:
    path: Path
    bytes: int


def _age(path: Path, now: float) -> float:
    """Seconds since anything in ``path`` (or its direct entries) last changed."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        try:
            with os.scandir(path) as it:
                for e in it:
                    newest = max(newest, e.stat(follow_symlinks=False).st_mtime)
        except OSError:
            pass
    return now - newest


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())
    return path.lstat().st_size


def sweep_folder(folder: Path, lock_of, own: Iterable[Path] = (), now: float | None = None,
                 max_age: float = STALE_AFTER) -> list[Removed]:
    """Remove the stale Tailor temporaries directly in ``folder``.

    ``lock_of(target) -> lock file path or None``: whose lock covers the target a temporary
    was for; ``own``: lock files the caller holds (their temporaries are stale at any age).
    """
    folder = Path(folder)
    now = time.time() if now is None else now
    own = {Path(p) for p in own}
    removed: list[Removed] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = TEMP_NAME.match(entry.name)
        if not m:
            continue
        target = folder / m.group("target")
        if m.group("suffix") == ".old" and not target.exists():
            continue  # the previous version of a folder whose replacement never landed
        lock = lock_of(target)
        try:
            if lock is not None and lock in own:
                pass  # ours now: whoever wrote it is gone
            elif lock is not None and locks.is_held(lock):
                continue  # a live job's
            elif _age(entry, now) < max_age:
                continue  # perhaps a live job that takes no lock (an in-process caller)
            size = _size(entry)
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:
            continue  # vanished meanwhile, or not ours to remove: leave it
        removed.append(Removed(entry, size))
    return removed


def _adapter_lock_of(adapters: Path):
    def lock_of(target: Path) -> Path | None:
        try:
            name = target.relative_to(adapters).parts[0]
        except (ValueError, IndexError):
            return None
        return locks.adapter_lock_path(name, adapters)
    return lock_of


def sweep_adapter_folder(folder: Path, held: bool = True, now: float | None = None
                         ) -> list[Removed]:
    """The temporaries in one adapter's folder, its ``checkpoints`` and its ``evaluations``
    (a killed eval's report, engine/evaluate/record.py) (``held``: the caller holds this
    adapter's lock)."""
    folder = Path(folder)
    adapters = folder.parent
    lock_of = _adapter_lock_of(adapters)
    own = [locks.adapter_lock_path(folder.name, adapters)] if held else []
    # the library's own leftovers for this name (.NAME.tmp-copy, .NAME.deleting, ...)
    removed = sweep_folder(adapters, lock_of, own=own, now=now) if held else []
    for sub in (folder, folder / "checkpoints", folder / "evaluations"):
        # everything inside an adapter's folder is covered by that adapter's lock
        removed += sweep_folder(sub, lambda t: lock_of(folder), own=own, now=now)
    return removed


def sweep_library(home: Path | None = None, now: float | None = None) -> list[Removed]:
    """Stale temporaries in the library: ``adapters/`` (and each adapter's folder,
    checkpoints and evaluations), ``exports/``, ``models/``, ``runs/``."""
    from . import paths

    home = Path(home) if home is not None else paths.tailor_home()
    adapters = home / "adapters"
    lock_of = _adapter_lock_of(adapters)
    removed = sweep_folder(adapters, lock_of, now=now)
    if adapters.is_dir():
        for folder in sorted(adapters.iterdir()):
            if folder.is_dir() and not folder.name.startswith("."):
                removed += sweep_adapter_folder(folder, held=False, now=now)
    for name in ("exports", "models", "runs"):
        removed += sweep_folder(home / name, lambda t: locks.output_lock_path(t, adapters),
                                now=now)
    removed += sweep_push_staging(home / PUSH_STAGING, now=now)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process: alive
    return True


def sweep_push_staging(folder: Path, now: float | None = None,
                       max_age: float = STALE_AFTER) -> list[Removed]:
    """The staging folders of pushes that were killed: their owner's pid is gone (a folder
    without a pid, from an older Tailor, once it is older than ``max_age``)."""
    now = time.time() if now is None else now
    removed: list[Removed] = []
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = STAGED.match(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            pid = m.group("pid")
            if pid is not None and (int(pid) == os.getpid() or _alive(int(pid))):
                continue
            if pid is None and _age(entry, now) < max_age:
                continue
            size = _size(entry)
            shutil.rmtree(entry)
        except OSError:
            continue
        removed.append(Removed(entry, size))
    return removed


def sweep_output_folder(target: Path | str, held: bool = True, now: float | None = None
                        ) -> list[Removed]:
    """Stale temporaries next to a job's output ``target`` (``held``: the caller holds the
    output lock of ``target``, so the temporaries for that very target are stale)."""
    target = Path(target).expanduser()
    own = [locks.output_lock_path(target)] if held else []
    return sweep_folder(target.parent, lambda t: locks.output_lock_path(t), own=own, now=now)


def summary(removed: list[Removed]) -> str:
    """"removed 2 stale temporary files left by an interrupted job (1.20 GB): …"."""
    if not removed:
        return ""
    biggest = sorted(removed, key=lambda r: -r.bytes)  # the ones worth knowing about first
    names = ", ".join(str(r.path) for r in biggest[:5])
    more = f" and {len(removed) - 5} more" if len(removed) > 5 else ""
    n = len(removed)
    return (f"removed {n} stale temporary file{'s' if n != 1 else ''} left by an interrupted "
            f"job ({format_bytes(sum(r.bytes for r in removed))}): {names}{more}")


def report_removed(removed: list[Removed], report: Reporter = null_reporter,
                   job: str = "") -> list[Removed]:
    if removed:
        report(Log(job=job, level="info", message=summary(removed)))
    return removed
