"""Standard streams a command can rely on, however it was started."""
from __future__ import annotations

import os
import sys

_STREAMS = ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w"))


def ensure_standard_fds() -> None:
    """Put /dev/null on any of file descriptors 0-2 that is closed (``tailor ... <&-``, some
    launchers and daemons).

    Otherwise the next file opened gets descriptor 0, and MLX's safetensors loader treats a
    descriptor of 0 as a failed open: every weight load fails with "[load_safetensors] Failed
    to open file". Python also sets ``sys.stdin`` (etc.) to None for a closed descriptor.
    """
    for fd, name, mode in _STREAMS:
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:  # only when a lower descriptor was free: never the case for 0
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))


def temp_folder_problem(environ=None) -> tuple[str, str] | None:
    """(message, hint) when ``$TMPDIR`` names a folder that cannot hold temporary files, else
    None. MLX asks C++ for the temporary folder (std::filesystem::temp_directory_path), which
    fails on such a TMPDIR with a bare "temp_directory_path: No such file or directory" in the
    middle of a job; Python's tempfile would quietly fall back to /tmp instead."""
    import shlex

    folder = (os.environ if environ is None else environ).get("TMPDIR")
    if not folder:
        return None
    if os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK):
        return None
    why = ("does not exist" if not os.path.exists(folder) else
           "is not a folder" if not os.path.isdir(folder) else "is not writable")
    return (f"the temporary folder {folder} (set by the TMPDIR environment variable) {why}; "
            "Tailor and MLX write temporary files there",
            f"create it (mkdir -p {shlex.quote(folder)}), point TMPDIR at a folder that exists, "
            "or unset it to use the system's (/tmp)")
