"""Write artifacts under a temporary name in the target folder, then rename into place.

A crash or a cancel never leaves a half-written file under the final name, and an existing
file is never overwritten unless the caller says so. A failed write (full disk, read-only or
permission-denied folder) becomes a ``WriteFailed`` naming the path and the reason, and the
temporary is removed.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from .events import ErrorCode, TailorError
from .sizes import format_bytes

# errno values that mean "this folder cannot take the write", as opposed to a bug.
DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}
READ_ONLY = {errno.EROFS}
NOT_ALLOWED = {errno.EACCES, errno.EPERM}
WRITE_FAULTS = DISK_FULL | READ_ONLY | NOT_ALLOWED

TEMP_MARK = ".tmp-"  # temp_sibling's names: .<target name>.tmp-<8 hex>[suffix]


class WriteFailed(TailorError):
    """A write the folder refused: no space, read-only, or not allowed (``errno`` says which)."""

    def __init__(self, message: str, hint: str = "", errno_: int | None = None,
                 path: str = ""):
        super().__init__(message, hint)
        self.errno = errno_
        self.path = path
        self.code = (ErrorCode.DISK_FULL if errno_ in DISK_FULL else
                     ErrorCode.READ_ONLY if errno_ in READ_ONLY else
                     ErrorCode.PERMISSION_DENIED)


def temp_sibling(target: Path, suffix: str = "") -> Path:
    return target.parent / f".{target.name}{TEMP_MARK}{uuid.uuid4().hex[:8]}{suffix}"


def free_bytes(folder: Path | str) -> int | None:
    """Free bytes on the file system holding ``folder`` (its nearest existing parent)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def tree_size(path: Path) -> int:
    """Bytes under ``path`` (a file or a folder); 0 when it is gone."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size
    except OSError:
        return 0


def write_fault(exc: OSError, target: Path | str, needed_bytes: int | None = None,
                written_bytes: int | None = None, action: str = "write") -> WriteFailed | None:
    """The user-facing error for an OSError raised while writing ``target``; None when the
    errno is not a write fault (a bug or something else: let it propagate)."""
    code = getattr(exc, "errno", None)
    if code not in WRITE_FAULTS:
        return None
    target = Path(target)
    where = Path(exc.filename) if getattr(exc, "filename", None) else target
    folder = target.parent
    if code in DISK_FULL:
        free = free_bytes(folder)
        if needed_bytes:
            need = f"need {format_bytes(needed_bytes)}"
        elif written_bytes:
            need = f"need more than the {format_bytes(written_bytes)} written"
        else:
            need = "need more space"
        free_text = f"{format_bytes(free)} free" if free is not None else "free space unknown"
        kind = "the disk quota is used up" if code == getattr(errno, "EDQUOT", -1) else \
            "the file is larger than the file system allows" if code == errno.EFBIG else \
            "the disk is full"
        return WriteFailed(f"cannot {action} {target}: {kind} ({need}, {free_text} in {folder})",
                           hint="free some space or choose an output folder on another disk; "
                                "the partial file was removed",
                           errno_=code, path=str(target))
    if code in READ_ONLY:
        return WriteFailed(f"cannot {action} {target}: {folder} is on a read-only file system",
                           hint="choose an output folder on a writable disk",
                           errno_=code, path=str(target))
    return WriteFailed(f"cannot {action} {target}: permission denied ({where})",
                       hint="choose a folder you can write to, or change its permissions",
                       errno_=code, path=str(target))


def diagnose_native_failure(exc: RuntimeError, target: Path | str,
                            needed_bytes: int | None = None) -> TailorError:
    """A native writer (MLX's C++ save) failed without an errno: find the reason by probing the
    target's folder with a tiny write, then by its free space."""
    target = Path(target)
    folder = target.parent
    probe = temp_sibling(target, ".probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
    except OSError as e:
        found = write_fault(e, target, needed_bytes)
        if found is not None:
            return found
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)
    free = free_bytes(folder)
    if free is not None and (free < (needed_bytes or 0) or free < (1 << 20)):
        return write_fault(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target,
                           needed_bytes)  # type: ignore[return-value]
    return TailorError(f"cannot write {target}: {exc}",
                       hint="check that the folder exists and that the disk is healthy")


@contextlib.contextmanager
def translate_write_faults(target: Path | str, needed_bytes: int | None = None,
                           written: Path | None = None, action: str = "write"
                           ) -> Iterator[None]:
    """Turn an OSError with a write-fault errno (or a native writer's RuntimeError) raised in
    the block into a ``WriteFailed`` naming ``target``. ``written``: the temporary whose size
    tells how much got written before a full disk; ``action``: the verb in the message."""
    try:
        yield
    except TailorError:
        raise
    except OSError as e:
        found = write_fault(e, target, needed_bytes,
                            tree_size(written) if written is not None else None, action)
        if found is None:
            raise
        raise found from e
    except RuntimeError as e:
        if not str(e).startswith("[save"):  # MLX: "[save_safetensors] Failed to open file"
            raise
        raise diagnose_native_failure(e, target, needed_bytes) from e


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(target: Path | str, overwrite: bool = False,
                needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; rename it to ``target`` when the block succeeds.

    Works for files and folders. On error the temporary is removed and the target untouched.
    Raises TailorError if the target exists and ``overwrite`` is false, and ``WriteFailed``
    when the folder refuses the write (``needed_bytes``: the size named for a full disk).
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise TailorError(f"{target} already exists; it was left untouched",
                          hint="choose another name or remove it first")
    tmp = temp_sibling(target)
    try:
        with translate_write_faults(target, needed_bytes, written=tmp):
            target.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            if target.exists() and not overwrite:
                raise TailorError(f"{target} appeared while writing; it was left untouched")
            if target.is_dir() and overwrite:
                old = temp_sibling(target, ".old")
                os.replace(target, old)
                try:
                    os.replace(tmp, target)
                except BaseException:
                    os.replace(old, target)  # put the previous version back
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def write_text_atomic(target: Path | str, text: str, overwrite: bool = True) -> Path:
    target = Path(target)
    data = text.encode("utf-8")
    with atomic_path(target, overwrite=overwrite, needed_bytes=len(data)) as tmp:
        tmp.write_bytes(data)
    return target


def write_json_atomic(target: Path | str, obj, overwrite: bool = True) -> Path:
    import json

    return write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False, default=str)
                             + "\n", overwrite=overwrite)


def save_safetensors(path: Path | str, arrays: dict, metadata: dict | None = None) -> None:
    """``mx.save_safetensors`` through a Python file object: a full disk or a refused folder
    raises OSError with its errno (MLX's own path writer ignores a failed write, and a failed
    open is a RuntimeError without one). MLX streams each tensor to ``write``: no extra copy."""
    import mlx.core as mx

    with open(path, "wb") as f:
        mx.save_safetensors(f, arrays, metadata=metadata)


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
        raise WriteFailed(
            f"not enough free disk space in {folder} for {what}: need "
            f"{format_bytes(needed_bytes)}, {format_bytes(free)} free",
            hint="free some space or choose another output folder", errno_=errno.ENOSPC,
            path=str(folder))


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


def save_model_shards(out_dir: Path | str, model) -> None:
    """mlx-lm's ``save_model`` (same shards, names and index), each shard written by
    ``save_safetensors`` so a full disk raises OSError instead of leaving a short file."""
    import json

    from mlx.utils import tree_flatten
    from mlx_lm.utils import get_total_parameters, make_shards

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    index = {"metadata": {"total_size": sum(v.nbytes for v in weights.values()),
                          "total_parameters": get_total_parameters(model)}, "weight_map": {}}
    shards = make_shards(weights)
    del weights
    name = "model-{:05d}-of-{:05d}.safetensors" if len(shards) > 1 else "model.safetensors"
    for i in range(len(shards)):
        shard, shards[i] = shards[i], None
        shard_name = name.format(i + 1, len(shards))
        save_safetensors(out_dir / shard_name, shard, metadata={"format": "mlx"})
        index["weight_map"].update(dict.fromkeys(shard, shard_name))
        del shard
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    with open(out_dir / "model.safetensors.index.json", "w") as f:
        json.dump(index, f, indent=4)
