"""Fault injection for write sites: every write under one folder fails the way a full disk, a
read-only mount, a permission-denied folder or a second Ctrl-C mid-write does.

    with write_faults(out_folder, "no-space") as faults:
        rc = main([...])
    assert faults.fired   # the command really wrote there

The tests run as root, where ``chmod 0o555`` does not stop a write, so the faults are injected
at the lowest Python level every writer goes through: ``open``/``io.open`` (the file object's
raw writes), ``os.open``/``os.write``, ``os.mkdir``, ``os.replace``/``os.rename``,
``os.link``/``os.symlink``, ``os.unlink``/``os.rmdir``, and MLX's native
``save_safetensors``/``save`` given a path (it writes from C++; it gets the RuntimeError MLX
raises when it cannot open the file). Reads are never touched.
"""
from __future__ import annotations

import builtins
import contextlib
import errno
import fnmatch
import io
import os
import shutil
from pathlib import Path
from typing import Iterator

FAULTS = ("no-space", "read-only", "permission-denied", "interrupted")
ERRNO = {"no-space": errno.ENOSPC, "read-only": errno.EROFS,
         "permission-denied": errno.EACCES}
# what each fault leaves on the terminal
REASON = {"no-space": "the disk is full", "read-only": "read-only file system",
          "permission-denied": "permission denied", "interrupted": "cancelled"}
EXIT = {"no-space": 1, "read-only": 1, "permission-denied": 1, "interrupted": 130}

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
# names Tailor gives its temporaries (engine/atomic.py, export, library): none may survive
TEMP_MARKS = (".tmp-", ".fused-", ".dequantized-", ".deleting", ".probe", ".old")


class Injector:
    def __init__(self, folder: Path, fault: str, after_bytes: int, names: str | None = None):
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        self.folder = os.path.realpath(folder)
        self.names = names
        self.fault = fault
        self.after_bytes = after_bytes
        self.written = 0
        self.fired: list[str] = []  # the paths where a fault was raised
        self._fds: dict[int, str] = {}

    def covers(self, path) -> bool:
        if isinstance(path, int) or path is None:
            return False
        try:
            p = os.path.realpath(os.fsdecode(path))  # (send2trash passes bytes)
        except TypeError:
            return False
        if self.names and not fnmatch.fnmatch(os.path.basename(p), self.names):
            return False
        return p == self.folder or p.startswith(self.folder + os.sep)

    def _raise(self, path: str, at_write: bool = False):
        self.fired.append(str(path))
        if self.fault == "interrupted":
            raise KeyboardInterrupt
        code = ERRNO[self.fault]
        # a full disk fails the write itself, without a file name (as the kernel reports it)
        raise OSError(code, os.strerror(code), None if at_write else str(path))

    def on_create(self, path) -> None:
        """Creating, renaming or removing an entry: refused on a read-only or locked folder."""
        if self.fault in ("read-only", "permission-denied") and self.covers(path):
            self._raise(os.fsdecode(path))

    def on_write(self, path: str, n: int) -> None:
        if self.fault in ("read-only", "permission-denied"):
            self._raise(path)
        if self.fault == "interrupted" and self.fired:
            self.written += n  # one Ctrl-C; the clean-up after it may write
            return
        if self.written + n > self.after_bytes:
            self._raise(path, at_write=True)
        self.written += n


class _FaultyRaw(io.RawIOBase):
    """A real file whose writes pass through ``Injector.on_write`` first."""

    def __init__(self, raw: io.FileIO, path: str, injector: Injector):
        self._raw, self._path, self._inj = raw, path, injector

    name = property(lambda self: self._path)
    mode = property(lambda self: self._raw.mode)

    def writable(self): return self._raw.writable()
    def readable(self): return self._raw.readable()
    def seekable(self): return self._raw.seekable()
    def readinto(self, b): return self._raw.readinto(b)
    def seek(self, *a): return self._raw.seek(*a)
    def tell(self): return self._raw.tell()
    def truncate(self, *a): return self._raw.truncate(*a)

    def fileno(self):
        # so shutil's copy cannot bypass write() with sendfile on the descriptor
        raise io.UnsupportedOperation("fault-injected file has no descriptor")

    def write(self, b):
        n = len(memoryview(b).cast("B"))
        self._inj.on_write(self._path, n)
        return self._raw.write(b)

    def close(self):
        if not self.closed:
            self._raw.close()
        super().close()


@contextlib.contextmanager
def write_faults(folder: Path | str, fault: str, after_bytes: int = 64,
                 names: str | None = None) -> Iterator[Injector]:
    """Inside the block, writes under ``folder`` fail with ``fault`` (one of ``FAULTS``):
    "no-space" once more than ``after_bytes`` were written there (ENOSPC from the write),
    "read-only"/"permission-denied" at the first create, write, rename or delete (EROFS/EACCES),
    "interrupted" raises KeyboardInterrupt (a second Ctrl-C) at the first write past
    ``after_bytes``, once. ``names``: only entries whose name matches this glob. Yields the
    injector (``.fired`` lists where it struck)."""
    import mlx.core as mx

    inj = Injector(Path(folder), fault, after_bytes, names)
    real = {"open": builtins.open, "os.open": os.open, "os.write": os.write,
            "os.close": os.close, "mkdir": os.mkdir, "replace": os.replace,
            "rename": os.rename, "link": os.link, "symlink": os.symlink,
            "unlink": os.unlink, "remove": os.remove, "rmdir": os.rmdir,
            "mx.save_safetensors": mx.save_safetensors, "mx.save": mx.save,
            "sendfile": shutil._USE_CP_SENDFILE}

    def faulty_open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None,
                    closefd=True, opener=None):
        writing = any(c in mode for c in "wax+")
        if not writing or opener is not None or not inj.covers(file):
            return real["open"](file, mode, buffering, encoding, errors, newline, closefd,
                                opener)
        path = os.fspath(file)
        inj.on_create(path)
        raw_mode = mode.replace("t", "").replace("b", "")
        raw = _FaultyRaw(io.FileIO(path, raw_mode), path, inj)
        if "b" in mode and buffering == 0:
            return raw
        size = buffering if buffering > 1 else io.DEFAULT_BUFFER_SIZE
        buffered = io.BufferedRandom(raw, size) if "+" in mode else io.BufferedWriter(raw, size)
        if "b" in mode:
            return buffered
        return io.TextIOWrapper(buffered, encoding=encoding or "utf-8", errors=errors,
                                newline=newline)

    def faulty_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is None and flags & _WRITE_FLAGS and inj.covers(path):
            inj.on_create(path)
            fd = real["os.open"](path, flags, mode)
            inj._fds[fd] = os.fspath(path)
            return fd
        return real["os.open"](path, flags, mode, dir_fd=dir_fd)

    def faulty_write(fd, data):
        if fd in inj._fds:
            inj.on_write(inj._fds[fd], len(data))
        return real["os.write"](fd, data)

    def faulty_close(fd):
        inj._fds.pop(fd, None)
        return real["os.close"](fd)

    def entry(name, *check):
        def wrapped(*args, **kwargs):
            if name == "mkdir" and args and os.path.lexists(args[0]):
                return real[name](*args, **kwargs)  # the kernel says EEXIST first
            if not kwargs.get("dir_fd") and not kwargs.get("src_dir_fd"):
                for i in check:
                    if i < len(args):
                        inj.on_create(args[i])
            return real[name](*args, **kwargs)
        return wrapped

    def native(name):
        def wrapped(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and inj.covers(file):
                inj.fired.append(os.fspath(file))
                if fault == "interrupted":
                    raise KeyboardInterrupt
                # what MLX raises when it cannot open; a full disk it does not notice at all
                raise RuntimeError(f"[{name.split('.')[-1]}] Failed to open file {file}")
            return real[name](file, *args, **kwargs)
        return wrapped

    patches = [(builtins, "open", faulty_open), (io, "open", faulty_open),
               (os, "open", faulty_os_open), (os, "write", faulty_write),
               (os, "close", faulty_close), (os, "mkdir", entry("mkdir", 0)),
               (os, "replace", entry("replace", 0, 1)), (os, "rename", entry("rename", 0, 1)),
               (os, "link", entry("link", 1)), (os, "symlink", entry("symlink", 1)),
               (os, "unlink", entry("unlink", 0)), (os, "remove", entry("remove", 0)),
               (os, "rmdir", entry("rmdir", 0)),
               (mx, "save_safetensors", native("mx.save_safetensors")),
               (mx, "save", native("mx.save")), (shutil, "_USE_CP_SENDFILE", False)]
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield inj
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


def leftover_temporaries(*folders: Path) -> list[Path]:
    """Tailor's temporaries (by name) anywhere under ``folders``."""
    found = []
    for folder in folders:
        if Path(folder).exists():
            found += [p for p in Path(folder).rglob(".*")
                      if any(m in p.name for m in TEMP_MARKS)]
    return found
