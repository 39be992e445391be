"""One job at a time per adapter and per output path: an exclusive OS file lock held for the
life of the job.

``fcntl.flock`` on ``<TAILOR_HOME>/locks/<key>.lock`` (macOS and Linux): the kernel drops the
lock when the holder exits in any way, SIGKILL included, so a killed job never leaves a stale
lock (a PID file would). The holder writes its command line and start time into the file, so a
refused job can say which job is running. The holder unlinks its lock file as it ends; a job
that opened the file just before checks after locking that the path still names the file it
locked, else starts over (so two jobs can never hold "the" lock on two different files). A
SIGKILLed holder leaves an unlocked file behind, which the next job reuses.

Readers (fuse, export, an Ollama hand-off of an adapter) take the same exclusive lock as
writers (train, resume, rename, delete, duplicate): a reader spends minutes on the adapter's
weights and manifest while a training run replaces them at every checkpoint, and a rename or
delete would pull the folder away mid-read. Two exports of one adapter at once are refused too,
which costs little and keeps one rule and one message.

The domain functions (fuse_adapter, export_gguf, library changes, training) take their own
locks, so a pipeline that calls them directly (the demo, the Ollama hand-off) is covered too;
the command runner takes the same ones first (before it sweeps leftovers). The readers'
locks (``reading``) are re-entrant: one its own thread already holds (the runner's, around
the call) is only counted, not taken again, since a second descriptor's flock would refuse
its own process. Any other lock is refused while held, in this process too (a library rename
beside a running training in the app's process).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from .events import ErrorCode, TailorError

# Set by engine/cli.py to the command line being run ("tailor train --resume x"), so the
# holder's description names what the user typed; in-process callers give a job name instead.
CURRENT_COMMAND: str | None = None


# (real lock path, thread id) -> how many nested acquires hold it (engine/locks.py docstring)
_HELD: dict[tuple[str, int], int] = {}
_HELD_GUARD = threading.Lock()


class Busy(TailorError):
    """The adapter or output is locked by another running job."""

    code = ErrorCode.LOCKED


def locks_dir(library_dir: Path | None = None) -> Path:
    """``<TAILOR_HOME>/locks`` (next to the library's ``adapters`` folder)."""
    from . import paths

    root = Path(library_dir).parent if library_dir is not None else paths.tailor_home()
    return root / "locks"


def adapter_lock_path(name: str, library_dir: Path | None = None) -> Path:
    return locks_dir(library_dir) / f"adapter-{name}.lock"


def output_lock_path(target: Path | str, library_dir: Path | None = None) -> Path:
    resolved = str(Path(target).expanduser().resolve())
    digest = hashlib.sha256(resolved.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return locks_dir(library_dir) / f"output-{digest}.lock"


def describe_holder(text: str) -> str:
    try:
        h = json.loads(text)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(h["started"])))
        return f"{h['command']} (pid {h['pid']} on {h['host']}, started {started})"
    except (ValueError, KeyError, TypeError):
        return "another Tailor job"


class JobLock:
    """An exclusive, non-blocking lock on one key; use as a context manager."""

    def __init__(self, path: Path, what: str, job: str = "", reentrant: bool = False):
        self.path = Path(path)
        self.reentrant = reentrant  # a hold by this same thread counts (the module docstring)
        self.what = what  # "the adapter 'x'", "the output /a/b.gguf"
        self.job = job
        self.fd: int | None = None
        self.started = 0.0
        self._nested_key: tuple[str, int] | None = None  # set while only counted (re-entry)
        self._owner_key: tuple[str, int] | None = None   # set while this one holds the flock

    def _key(self) -> tuple[str, int]:
        return os.path.realpath(self.path), threading.get_ident()

    def _open(self) -> int:
        from .atomic import translate_write_faults

        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            try:  # a read-only library: an existing lock file still locks (without the note),
                return os.open(self.path, os.O_RDONLY)  # and the job's own write says why
            except OSError:
                with translate_write_faults(self.path):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)

    def acquire(self) -> "JobLock":
        """Take the lock or raise Busy naming the running job (TailorError if the lock file
        cannot be made, e.g. a read-only library). ``reentrant``: counted, not taken again,
        when this thread holds it already."""
        key = self._key()
        with _HELD_GUARD:
            if self.reentrant and _HELD.get(key):
                _HELD[key] += 1
                self._nested_key = key
                return self
        self._flock()
        with _HELD_GUARD:
            _HELD[key] = 1
        self._owner_key = key
        return self

    def _flock(self) -> None:
        deadline = time.monotonic() + 0.5
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                note = os.pread(fd, 4096, 0).decode("utf-8", "replace")
                os.close(fd)
                if time.monotonic() < deadline:
                    # perhaps only is_held's momentary probe, or a holder about to release
                    time.sleep(0.02)
                    continue
                raise Busy(f"{self.what} is in use by another job: {describe_holder(note)}; "
                           "nothing was changed",
                           hint="wait for that job to finish, or stop it (in the app, or with "
                                "Ctrl-C in its terminal), then try again") from None
            except BaseException:
                os.close(fd)
                raise
            # The last holder unlinks the file when it ends; if that happened between our
            # open and flock, we hold a lock on a file nobody else will see: start over.
            try:
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            if current is None or not os.path.samestat(os.fstat(fd), current):
                os.close(fd)
                continue
            break
        self.fd = fd
        self.started = time.time()
        command = CURRENT_COMMAND or f"{self.job or 'a job'} in {os.path.basename(sys.argv[0])}"
        info = json.dumps({"command": command, "job": self.job, "pid": os.getpid(),
                           "host": socket.gethostname(), "started": self.started,
                           "what": self.what})
        with contextlib.suppress(OSError):  # the lock holds even if the note cannot be written
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode("utf-8"), 0)

    def release(self) -> None:
        """Unlink the lock file while still holding it (so a library does not collect one
        per output path ever written), then drop the lock. A nested hold only uncounts."""
        if self._nested_key is not None:
            key, self._nested_key = self._nested_key, None
            with _HELD_GUARD:
                if key in _HELD:
                    _HELD[key] -= 1
            return
        if self.fd is None:
            return
        with _HELD_GUARD:
            _HELD.pop(self._owner_key, None)
        self._owner_key = None
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> "JobLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def adapter_lock(name: str, job: str = "", library_dir: Path | None = None, *,
                 reentrant: bool = False) -> JobLock:
    return JobLock(adapter_lock_path(name, library_dir), f"the adapter {name!r}", job,
                   reentrant)


def output_lock(target: Path | str, job: str = "", library_dir: Path | None = None, *,
                reentrant: bool = False) -> JobLock:
    return JobLock(output_lock_path(target, library_dir), f"the output {target}", job, reentrant)


@contextlib.contextmanager
def holding(*locks: JobLock) -> Iterator[tuple[JobLock, ...]]:
    """Acquire every lock (all or none), release them all when the block ends."""
    with contextlib.ExitStack() as stack:
        taken: list[JobLock] = []
        for lock in locks:
            # "A" and "a" are one file on a case-insensitive disk (macOS): lock it once
            if any(_same_file(lock.path, t.path) for t in taken):
                continue
            stack.enter_context(lock)
            taken.append(lock)
        yield locks


def reading(adapter: str | None, out: Path | str | None, job: str = "",
            library_dir: Path | None = None):
    """The locks a reader of an adapter holds for its whole run (fuse, export): the adapter
    (exclusive: training replaces the weights it reads; delete and rename would pull the folder
    away) and the path it writes, both re-entrant (a runner around the call holds them
    already)."""
    wanted = []
    if adapter:
        wanted.append(adapter_lock(adapter, job, library_dir, reentrant=True))
    if out is not None:
        wanted.append(output_lock(out, job, reentrant=True))
    return holding(*wanted)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_held(lock_path: Path) -> bool:
    """Whether a live process holds the lock at ``lock_path`` (this one included, through
    another descriptor). A missing lock file is not held."""
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops the probe's own lock
    return False
