"""Run a call that must not hang, with a limit the test can fail on."""
from __future__ import annotations

import threading
import time


def bounded(fn, limit: float, what: str = "the call"):
    """Run ``fn`` in a thread; -> (its result or the exception it raised, seconds taken).
    The test fails if it is still running after ``limit`` seconds."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            box["value"] = e

    t0 = time.monotonic()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"{what} still waits after {limit} s"
    return box["value"], time.monotonic() - t0
