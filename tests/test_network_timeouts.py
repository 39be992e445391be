"""Hugging Face lookups against a Hub that accepts connections and never answers (a stuck proxy).

Pins the bug where `tailor model ...` hung past 150 s there (huggingface_hub asks for the repo
with no timeout at all), ignored the first Ctrl-C and printed a KeyboardInterrupt traceback on
the second. A lookup must end after `--timeout` seconds of silence with a message naming the
repo and the limit, and a cancel must take effect at once.
"""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from engine.events import CancelToken, Cancelled, ListReporter, TailorError
from engine.models.resolve import _snapshot, resolve_model
from tests.bounded import bounded
from tests.conftest import REPO

REPO_ID = "someone/never-answered"


class SilentHub:
    """A 127.0.0.1 server that accepts every connection, reads nothing and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in self.accepted:
            c.close()
        self.sock.close()


@pytest.fixture
def silent_hub(tmp_path, monkeypatch):
    """The Hub endpoint pointed at a SilentHub, downloads allowed, an empty cache."""
    from huggingface_hub import constants

    hub = SilentHub()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield hub
    hub.close()


@pytest.mark.parametrize("how", ["download", "resolve"])
def test_a_silent_hub_ends_after_the_timeout_naming_the_repo(silent_hub, how):
    def lookup():
        if how == "download":
            return _snapshot(REPO_ID, ListReporter(), None, None, "model", timeout=1.5)
        return resolve_model(REPO_ID, timeout=1.5)

    error, seconds = bounded(lookup, 30, "the lookup")
    assert isinstance(error, TailorError), error
    assert error.message == (f"the Hugging Face Hub ({silent_hub.url}) did not answer within "
                             f"1.5 s while fetching {REPO_ID}")
    assert "--timeout" in error.hint
    assert silent_hub.accepted  # it did try the network
    assert seconds < 10


def test_a_cancel_stops_a_silent_lookup_at_once(silent_hub):
    cancel = CancelToken()

    def cancel_once_connected():
        deadline = time.monotonic() + 20
        while not silent_hub.accepted and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        cancel.cancel("test")

    threading.Thread(target=cancel_once_connected, daemon=True).start()
    t0 = time.monotonic()
    error, _ = bounded(lambda: _snapshot(REPO_ID, ListReporter(), cancel, None, "model",
                                         timeout=120), 30)
    assert isinstance(error, Cancelled) and f"stopped while fetching {REPO_ID}" in str(error)
    assert time.monotonic() - t0 < 20 and silent_hub.accepted


def _cli(hub: SilentHub, tmp_path, *argv) -> subprocess.Popen:
    import os

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.Popen([sys.executable, "-m", "engine", "model", *argv], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture
def hub_for_cli():
    hub = SilentHub()
    yield hub
    hub.close()


def test_cli_download_timeout_2_ends_with_the_message(hub_for_cli, tmp_path):
    t0 = time.monotonic()
    proc = _cli(hub_for_cli, tmp_path, "download", REPO_ID, "--timeout", "2")
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert f"did not answer within 2 s while fetching {REPO_ID}" in err
    assert "Traceback" not in err and time.monotonic() - t0 < 40


def test_cli_first_ctrl_c_cancels_a_silent_lookup(hub_for_cli, tmp_path):
    proc = _cli(hub_for_cli, tmp_path, "info", REPO_ID, "--timeout", "120")
    try:
        deadline = time.monotonic() + 60
        while not hub_for_cli.accepted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub_for_cli.accepted, "the lookup never reached the network"
        time.sleep(0.3)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # once
        out, err = proc.communicate(timeout=30)
        seconds = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert f"[model] cancelled. stopped while fetching {REPO_ID}" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert seconds < 15  # a hang detector (the lookup would wait 120 s), not a speed target
