"""Keep the encoders' freed work arrays in the process heap instead of handing them back.

Every encoder pass allocates and frees numpy arrays of 0.5-4 MiB. glibc's malloc serves
such sizes with mmap (threads' arenas trim their top back to the kernel as well), so each
array is faulted in page by page, zeroed by the kernel and unmapped again: on a 0.4B-model
export that was ~900k page faults and a quarter of its CPU time. With a fixed mmap threshold
of 32 MiB and a trim threshold of 256 MiB the same memory is reused across pieces; the peak
stays what the pieces in flight need (freed blocks are reused, not added).

Linux/glibc only (mallopt); elsewhere, or when the C library has no mallopt, nothing changes.
"""
from __future__ import annotations

import ctypes
import sys

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest allowed value on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 256 << 20

_applied: bool | None = None


def keep_freed_buffers() -> bool:
    """Set glibc's thresholds once per process; True when they are in effect."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success (glibc); musl's stub returns 0 and changes nothing
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
