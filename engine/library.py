"""The adapter library: ``<TAILOR_HOME>/adapters/<name>/``.

Each adapter folder holds what ``mlx_lm.generate --adapter-path`` loads as it is
(``adapters.safetensors``, ``adapter_config.json``) plus Tailor's versioned ``manifest.json``
(base model, dataset, settings, loss history, versions, status), and a ``checkpoints/`` folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import paths
from .atomic import atomic_path, translate_write_faults, write_json_atomic
from .events import ErrorCode, TailorError
from .results import RUN_STATUSES

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "tailor.adapter/1"
STATUSES = RUN_STATUSES  # a run's manifest status (engine/results.py JobState)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
MAX_NAME_LEN = 64


class NameError_(TailorError):
    """A library name that is not allowed."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe library name, else raise TailorError saying why."""
    if not isinstance(name, str) or not name.strip():
        raise NameError_("the adapter name is empty", hint="give the adapter a name, e.g. my-style")
    if name != name.strip():
        raise NameError_(f"the adapter name {name!r} starts or ends with spaces")
    if len(name) > MAX_NAME_LEN:
        raise NameError_(f"the adapter name is {len(name)} characters long; the limit is "
                         f"{MAX_NAME_LEN}")
    if "/" in name or "\\" in name or "\x00" in name:
        raise NameError_(f"the adapter name {name!r} contains a path separator",
                         hint="use letters, digits, '-', '_', '.' and spaces")
    if name.startswith("."):
        raise NameError_(f"the adapter name {name!r} starts with a dot")
    if ".." in name:
        raise NameError_(f"the adapter name {name!r} contains '..'")
    if not _NAME_RE.match(name):
        raise NameError_(f"the adapter name {name!r} has characters that are not allowed",
                         hint="use letters, digits, '-', '_', '.' and spaces")
    return name


def adapter_path(name: str, library: Path | None = None) -> Path:
    """The folder for ``name``, checked to stay inside the library."""
    validate_name(name)
    root = (library or paths.adapters_dir()).resolve()
    p = (root / name).resolve()
    if p.parent != root:
        raise NameError_(f"the adapter name {name!r} would leave the library folder")
    return p


@dataclass
class AdapterInfo:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def status(self) -> str:
        return self.manifest.get("status", "unknown")

    @property
    def base_model(self) -> str:
        return (self.manifest.get("base_model") or {}).get("path", "")

    @property
    def weights(self) -> Path:
        return self.path / "adapters.safetensors"


def read_manifest(folder: Path) -> dict[str, Any]:
    f = folder / MANIFEST_NAME
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{f}: unreadable manifest ({e})") from e


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    manifest = {"schema": MANIFEST_SCHEMA, **manifest, "updated": time.time()}
    write_json_atomic(folder / MANIFEST_NAME, manifest)


def list_adapters(library: Path | None = None) -> list[AdapterInfo]:
    root = library or paths.adapters_dir()
    out = []
    for p in sorted(root.iterdir()) if root.exists() else []:
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_NAME).exists():
            try:
                out.append(AdapterInfo(p.name, p, read_manifest(p)))
            except TailorError:
                out.append(AdapterInfo(p.name, p, {"status": "unreadable"}))
    return out


def get_adapter(name: str, library: Path | None = None) -> AdapterInfo:
    p = adapter_path(name, library)
    if not p.is_dir():
        known = ", ".join(a.name for a in list_adapters(library)) or "none yet"
        raise TailorError(f"no adapter named {name!r} in the library ({p.parent})",
                          hint=f"adapters in the library: {known}")
    return AdapterInfo(name, p, read_manifest(p))


def _locked(*names: str, library: Path | None, job: str):
    """Exclusive locks on the adapters ``names`` (engine/locks.py): refused with a message
    naming the running job while one trains, resumes, or is fused or exported."""
    from . import locks

    for n in names:
        validate_name(n)
    return locks.holding(*(locks.adapter_lock(n, job, library) for n in names))


def reading(source, out: Path | str | None, job: str = ""):
    """The locks a reader of an adapter (fuse, export) holds for its whole run, re-entrant so
    the command runner's own hold around it counts (engine/locks.py ``reading``). ``source``:
    an adapter name, an AdapterInfo, or a model folder (a Path: no adapter to lock)."""
    from . import locks

    if isinstance(source, AdapterInfo):
        return locks.reading(source.name, out, job, source.path.parent)
    if isinstance(source, Path):
        return locks.reading(None, out, job)
    return locks.reading(validate_name(str(source)), out, job)


def rename_adapter(old: str, new: str, library: Path | None = None) -> AdapterInfo:
    get_adapter(old, library)
    adapter_path(new, library)
    with _locked(old, new, library=library, job="library rename"):
        return _rename(old, new, library)


def _rename(old: str, new: str, library: Path | None) -> AdapterInfo:
    src = get_adapter(old, library)
    dst = adapter_path(new, library)
    if dst.exists():
        raise TailorError(f"an adapter named {new!r} already exists; nothing was renamed",
                          code=ErrorCode.NAME_TAKEN)
    with translate_write_faults(src.path, action="rename"):
        src.path.rename(dst)
    m = read_manifest(dst)
    m["name"] = new
    try:
        write_manifest(dst, m)
    except BaseException:
        dst.rename(src.path)  # the manifest would name the old folder: undo
        raise
    return AdapterInfo(new, dst, m)


def duplicate_adapter(old: str, new: str, library: Path | None = None) -> AdapterInfo:
    get_adapter(old, library)
    adapter_path(new, library)
    with _locked(old, new, library=library, job="library duplicate"):
        return _duplicate(old, new, library)


def _duplicate(old: str, new: str, library: Path | None) -> AdapterInfo:
    src = get_adapter(old, library)
    dst = adapter_path(new, library)
    if dst.exists():
        raise TailorError(f"an adapter named {new!r} already exists; nothing was copied",
                          code=ErrorCode.NAME_TAKEN)
    m = read_manifest(src.path)
    m["name"] = new
    m["duplicated_from"] = old
    size = sum(p.stat().st_size for p in src.path.rglob("*")
               if p.is_file() and "checkpoints" not in p.relative_to(src.path).parts)
    with atomic_path(dst, needed_bytes=size) as tmp:  # a failed copy leaves nothing behind
        _copy_folder(src.path, tmp, skip={"checkpoints"})
        write_manifest(tmp, m)
    return AdapterInfo(new, dst, read_manifest(dst))


def _copy_folder(src: Path, dst: Path, skip: set[str]) -> None:
    """``shutil.copytree`` without the top-level ``skip`` names, raising the first OSError as
    it is (copytree gathers them into a shutil.Error of strings, losing the errno)."""
    dst.mkdir()
    for entry in sorted(src.iterdir()):
        if entry.name in skip:
            continue
        if entry.is_dir() and not entry.is_symlink():
            _copy_folder(entry, dst / entry.name, set())
        else:
            shutil.copy2(entry, dst / entry.name, follow_symlinks=False)


@dataclass
class Deleted:
    """Where a deleted adapter went: ``trash`` is its folder in the system Trash (None when it
    was deleted permanently, or the Trash does not say where it put it)."""

    name: str
    was: Path
    permanently: bool
    trash: Path | None = None

    def sentence(self) -> str:
        if self.permanently:
            return f"deleted {self.name!r} permanently"
        where = f" ({self.trash})" if self.trash else ""
        return f"moved {self.name!r} to the Trash{where}; restore it from there if needed"


def delete_adapter(name: str, library: Path | None = None, *,
                   permanently: bool = False) -> Deleted:
    """Move the adapter's folder to the system Trash (recoverable: Finder's on macOS, the
    freedesktop trash on Linux), or with ``permanently`` remove it. A Trash that cannot take
    it refuses the delete, leaving the adapter as it was."""
    get_adapter(name, library)
    with _locked(name, library=library, job="library delete"):
        if permanently:
            return _delete(name, library)
        return _trash(name, library)


def _delete(name: str, library: Path | None) -> Deleted:
    info = get_adapter(name, library)
    # Move aside first so a half-deleted folder never looks like a valid adapter.
    trash = info.path.parent / f".{name}.deleting"
    with translate_write_faults(info.path, action="delete"):
        info.path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return Deleted(name, info.path, permanently=True)


def _trash(name: str, library: Path | None) -> Deleted:
    info = get_adapter(name, library)
    since = time.time() - 2  # (trashinfo dates are whole seconds)
    try:
        from send2trash import send2trash  # (reads XDG_DATA_HOME when first imported)

        send2trash(str(info.path))
    except ImportError as e:
        raise _no_trash(name, f"the send2trash package is missing ({e})") from e
    except OSError as e:
        for orphan in _trash_entries(info.path, since, orphans=True):
            with contextlib.suppress(OSError):  # the move failed after its note was written
                orphan.unlink()
        fault = _library_fault(e, info.path)
        if fault is not None:
            raise fault from e
        raise _no_trash(name, _reason(e)) from e
    if info.path.exists():
        raise _no_trash(name, "the folder is still in the library after the move")
    found = _trash_entries(info.path, since)
    return Deleted(name, info.path, permanently=False, trash=found[-1] if found else None)


def _no_trash(name: str, reason: str) -> TailorError:
    return TailorError(f"cannot move the adapter {name!r} to the Trash: {reason}; nothing was "
                       "deleted",
                       hint=f"delete it for good instead (it cannot be restored then): "
                            f"tailor library delete {_quoted(name)} --permanently")


def _quoted(name: str) -> str:
    import shlex

    return shlex.quote(name)


def _reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__
    return f"{text} ({os.fsdecode(e.filename)})" if getattr(e, "filename", None) else text


def _library_fault(e: OSError, folder: Path):
    """The write fault of the library itself (a read-only or locked adapters folder: deleting
    for good would fail the same way), or None when the Trash is what failed."""
    from send2trash import TrashPermissionError

    if isinstance(e, TrashPermissionError):
        return None
    where = getattr(e, "filename", None)
    if where is not None:
        where = Path(os.fsdecode(where))
        if where != folder.parent and folder.parent not in where.parents:
            return None  # e.g. the Trash's own folders could not be made
    dst = getattr(e, "filename2", None)  # a rename names both ends; which one refused?
    if dst is not None and not os.access(os.path.dirname(os.fsdecode(dst)), os.W_OK):
        return None
    from .atomic import write_fault

    named = OSError(e.errno, e.strerror, os.fsdecode(where) if where is not None else None)
    return write_fault(named, folder, action="delete")  # (send2trash's names are bytes)


def _trash_folders(original: Path) -> list[tuple[Path, Path]]:
    """The freedesktop trash folders that may hold ``original``, each with the folder its notes'
    relative paths start from: ``$XDG_DATA_HOME/Trash``, and the volume's own ``.Trash/<uid>``
    and ``.Trash-<uid>`` (where the spec puts what is deleted on a second disk)."""
    data = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    top = original.parent
    while not os.path.ismount(top) and top != top.parent:
        top = top.parent
    uid = str(os.getuid())
    return [(data / "Trash", data), (top / ".Trash" / uid, top), (top / f".Trash-{uid}", top)]


def _trash_entries(original: Path, since: float, orphans: bool = False) -> list[Path]:
    """What the Trash holds for ``original`` since ``since``: the trashed folders (oldest
    first), or with ``orphans`` the notes (``.trashinfo``) of moves that did not happen."""
    from urllib.parse import unquote

    if sys.platform == "darwin":
        mac = Path.home() / ".Trash" / original.name  # (Finder renames on a clash: then None)
        moved = not orphans and mac.exists() and mac.lstat().st_ctime >= since
        return [mac] if moved else []
    found: list[tuple[float, Path]] = []
    for trash, top in _trash_folders(original):
        notes = sorted((trash / "info").glob("*.trashinfo")) if (trash / "info").is_dir() else []
        for note in notes:
            try:
                when = note.stat().st_mtime
                if when < since:
                    continue
                text = note.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            path = next((unquote(line[5:]) for line in text.splitlines()
                         if line.startswith("Path=")), "")
            if not path or top / path != original:  # (an absolute path replaces top)
                continue
            moved = trash / "files" / note.name[:-len(".trashinfo")]
            if orphans != moved.exists():
                found.append((when, note if orphans else moved))
    return [path for _, path in sorted(found)]
