"""Write artifacts under a temporary name in the target folder, then rename into place.

A crash or a cancel never leaves a half-written file under the final name, and an existing
file is never overwritten unless the caller says so.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .events import TailorError


def temp_sibling(target: Path, suffix: str = "") -> Path:
    return target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}{suffix}"


@contextlib.contextmanager
def atomic_path(target: Path | str, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it to ``target`` when the block succeeds.

    Works for files and folders. On error the temporary is removed and the target untouched.
    Raises TailorError if the target exists and ``overwrite`` is false.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise TailorError(f"{target} already exists; it was left untouched",
                          hint="choose another name or remove it first")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        if target.exists() and not overwrite:
            raise TailorError(f"{target} appeared while writing; it was left untouched")
        if target.is_dir() and overwrite:
            old = temp_sibling(target, ".old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path | str, text: str, overwrite: bool = True) -> Path:
    target = Path(target)
    with atomic_path(target, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def write_json_atomic(target: Path | str, obj, overwrite: bool = True) -> Path:
    import json

    return write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False, default=str)
                             + "\n", overwrite=overwrite)


def check_free_space(folder: Path | str, needed_bytes: int, what: str = "this file",
                     free_bytes_fn=None) -> None:
    """Raise TailorError when ``folder`` has less than ``needed_bytes`` free (plus 5% margin).

    ``free_bytes_fn`` is injectable so tests can simulate a full disk.
    """
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = free_bytes_fn(probe) if free_bytes_fn else shutil.disk_usage(probe).free
    if free < needed_bytes * 1.05:
        raise TailorError(
            f"not enough free disk space in {folder} for {what}: need "
            f"{needed_bytes / 1e9:.2f} GB, {free / 1e9:.2f} GB free",
            hint="free some space or choose another output folder")


def sha256_file(path: Path | str, chunk: int = 1 << 20, progress=None) -> str:
    """Stream a file's sha256 (hex). ``progress(done, total)`` is called per chunk if given."""
    import hashlib

    path = Path(path)
    total = path.stat().st_size
    h = hashlib.sha256()
    done = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest()
