"""An Ollama that answers 200 and one line, then goes silent: `--timeout` bounds every silence
(answers, uploads, the create stream), and Ctrl-C stops at once with the cancelled message.

Pins the bug where a create stream that stalled after its first line was waited on for up to
600 s whatever `--timeout` said. The client calls run in a helper thread with a join limit, so a
regression fails the test instead of hanging the run.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

from engine.events import CancelToken, Cancelled, decode_event
from engine.ollama.client import OllamaClient, OllamaError
from engine.ollama.handoff import send_gguf
from tests.bounded import bounded
from tests.conftest import REPO



@pytest.mark.parametrize("endpoint,words", [
    ("version", "while asking for its version"),
    ("tags", "while listing models"),
    ("blob_post", "while uploading my-model-f16.gguf"),
    ("create", "while creating m:latest"),
    ("show", "while checking m:latest"),
])
def test_a_stall_after_the_first_line_ends_after_the_timeout(server, gguf, endpoint, words):
    server.fault(endpoint, "stall_after_first_line")

    def hand_off():
        with OllamaClient(server.host, timeout=1.0) as client:  # as the CLI builds it
            return send_gguf(client, gguf, "m")

    error, seconds = bounded(hand_off, 20, "the hand-off to the stalled server")
    assert isinstance(error, OllamaError), error
    assert f"did not answer within 1 s {words}" in error.message
    assert seconds < 8
    assert server.models == {} or endpoint == "show"


def test_cancel_during_a_stalled_stream_is_immediate(server, gguf):
    server.fault("create", "stall_after_first_line")
    cancel = CancelToken()

    def hand_off():
        with OllamaClient(server.host, timeout=60.0) as client:
            return send_gguf(client, gguf, "m", cancel=cancel)

    t = threading.Thread(target=lambda: (
        _wait_for(lambda: server.count("POST", "/api/create") > 0), cancel.cancel("test")),
        daemon=True)
    t.start()
    error, seconds = bounded(hand_off, 20, "the hand-off to the stalled server")
    assert isinstance(error, Cancelled) and "creating m:latest" in str(error)
    assert seconds < 10 and server.models == {}


def _wait_for(cond, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)


def _start_cli(server, gguf, *extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", "ollama", "--gguf", str(gguf),
                             "--name", "m", "--host", server.host, "--events", "-", *extra],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("endpoint,words", [("create", "while creating m:latest"),
                                            ("blob_post", "while uploading my-model-f16.gguf")])
def test_cli_timeout_3_bounds_a_stalled_stream(server, gguf, endpoint, words):
    server.fault(endpoint, "stall_after_first_line")
    t0 = time.monotonic()
    proc = _start_cli(server, gguf, "--timeout", "3")
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    seconds = time.monotonic() - t0
    failed = decode_event(out.splitlines()[-1])
    assert proc.returncode == 1 and failed.kind == "failed"
    assert f"did not answer within 3 s {words}" in failed.message
    assert "Traceback" not in err and seconds < 30
    assert server.models == {}


def test_ctrl_c_during_a_stalled_create_cancels_at_once(server, gguf):
    server.fault("create", "stall_after_first_line")
    proc = _start_cli(server, gguf, "--timeout", "60")
    try:
        _wait_for(lambda: server.count("POST", "/api/create") > 0)
        time.sleep(0.3)  # inside the stalled stream
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        proc.kill()
    events = [decode_event(line) for line in out.splitlines()]
    assert proc.returncode == 130 and events[-1].kind == "cancelled"
    assert "creating m:latest" in events[-1].message
    assert "[ollama] cancelled." in err and "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    # a hang detector, not a speed target: the stalled stream itself would wait 60 s
    assert seconds < 15
    assert server.models == {} and gguf.exists()
