"""The packing planner (``--pack``): which examples share a row. Stdlib only, so the app's Train
page counts a packed run's steps with the planner the run uses (engine/train/packing.py holds
the attention masks, which need MLX)."""
from __future__ import annotations

import bisect


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Example indices per row: best fit, longest first, each row's total at most
    ``capacity``. Deterministic (ties by index), so a resumed run packs the same rows."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row), sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, r = free.pop(at)
            rows[r].append(i)
            room -= n
        else:
            rows.append([i])
            r, room = len(rows) - 1, capacity - n
        if room > 0:
            bisect.insort(free, (room, r))
    return rows
