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
