"""An encoding worker process of the GGUF writer (started by piece_processes.py as
``python -m engine.export.piece_worker``): reads tasks from stdin, encodes each piece and
writes its bytes into the output file at the piece's offset, answers on stdout.

The channel is a pair of pipes to the parent only, which pickles tasks of its own making (no
file's data is ever unpickled here). Protocol, one pickle per message:
  parent: (PieceJob, path, offset) | None (stop)
  worker: ("ok", nbytes) | ("refused", message, hint) | ("oserror", errno, strerror, file)
          | ("error", message, hint, code)
          | ("bye", peak RSS bytes, RSS bytes after start-up) after None
"""
from __future__ import annotations

import os
import pickle
import resource
import sys


def _peak_rss() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _write_at(fds: dict, path: str, data, offset: int) -> None:
    fd = fds.get(path)
    if fd is None:
        fd = fds[path] = os.open(path, os.O_WRONLY)
    view = memoryview(data).cast("B")
    while view:  # pwrite may write less than asked
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _run(job, path: str, offset: int, fds: dict) -> tuple:
    import numpy as np

    try:
        data = np.ascontiguousarray(job.encode())
    except ValueError as e:  # NaN/inf weights, values too large for the format's scales
        return ("refused", *job.refusal(str(e)))
    _write_at(fds, path, data, offset)
    return ("ok", data.nbytes)


def main() -> int:
    tasks, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout is the channel: a stray print must not land in it
    from . import pieces  # noqa: F401 - the encoders' imports, before the first task

    base = _peak_rss()
    fds: dict = {}
    while True:
        try:
            task = pickle.load(tasks)
        except EOFError:  # the parent is gone
            return 0
        if task is None:
            pickle.dump(("bye", _peak_rss(), base), replies)
            replies.flush()
            return 0
        try:
            reply = _run(*task, fds)
        except OSError as e:  # a full disk: the parent raises it again, as the writer would
            reply = ("oserror", e.errno, e.strerror, e.filename or task[1])  # (pwrite: none)
        except Exception as e:  # a truncated file (TailorError): its message
            code = getattr(e, "code", None)
            reply = ("error", str(getattr(e, "message", None) or e) or type(e).__name__,
                     getattr(e, "hint", ""), None if code is None else str(code))
        pickle.dump(reply, replies)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
