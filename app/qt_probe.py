"""Find out whether Qt can open a window here, before Qt aborts the whole process trying.

When Qt's platform plugin cannot start (no X server behind ``$DISPLAY``, a missing system
library such as libxcb-cursor0), Qt prints a few lines and calls abort(): exit status 134 and,
where enabled, a core dump. So the launcher first creates a QApplication in a child process
and, when that fails, says why in one line. Imports no Qt itself.
"""
from __future__ import annotations

import ctypes.util
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Qt 6.5+ needs this library for its xcb (X11) plugin; Debian/Ubuntu ship it as libxcb-cursor0.
XCB_CURSOR_LIBRARY = "xcb-cursor"
XCB_CURSOR_PACKAGE = "libxcb-cursor0"
# A cold PySide6 import plus a QApplication takes about 1 s here; a hung X connection is the
# case this bounds.
PROBE_TIMEOUT_S = 30.0


@dataclass
class QtProbe:
    ok: bool
    reason: str = ""  # one line a user can act on; empty when ok
    missing_package: str = ""  # the system package to install, when that is the cause


def probe_command() -> list[str]:
    """The command that creates a QApplication and exits 0 (see launcher ``--qt-probe``)."""
    if getattr(sys, "frozen", False):  # a frozen app: its own executable is the launcher
        return [sys.executable, "--qt-probe"]
    return [sys.executable, "-m", "app.launcher", "--qt-probe"]


def run_probe_here() -> int:
    """What the child does: create a QApplication (Qt aborts the child, not us, if it can't)."""
    from PySide6.QtWidgets import QApplication

    QApplication([sys.argv[0]])
    return 0


def _no_core_dump() -> None:  # runs in the child before exec
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass


def x_display_reachable(display: str, timeout: float = 1.0) -> bool:
    """True when an X server accepts a connection for ``display`` (":0", "host:1.0")."""
    host, _, rest = display.rpartition(":")
    try:
        number = int(rest.split(".")[0])
    except ValueError:
        return False
    if host in ("", "unix"):
        path = Path(f"/tmp/.X11-unix/X{number}")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = str(path)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        target = (host, 6000 + number)
    s.settimeout(timeout)
    try:
        s.connect(target)  # type: ignore[arg-type]
        return True
    except OSError:
        return False
    finally:
        s.close()


def library_loadable(name: str) -> bool:
    return ctypes.util.find_library(name) is not None


def diagnose(stderr: str, env: dict[str, str], *, display_reachable=x_display_reachable,
             lib_loadable=library_loadable) -> QtProbe:
    """The one-line reason for a failed probe, from Qt's own output and what is missing.

    Qt names libxcb-cursor0 whenever its xcb plugin fails, even when the real cause is an
    X server that does not answer, so the display is checked first.
    """
    display = env.get("DISPLAY", "")
    platform = env.get("QT_QPA_PLATFORM", "")
    if display and platform in ("", "xcb") and not env.get("WAYLAND_DISPLAY"):
        if not display_reachable(display):
            return QtProbe(False, f"no X server answers at DISPLAY={display} (a closed or stale "
                                  "session?)")
        if not lib_loadable(XCB_CURSOR_LIBRARY):
            return QtProbe(False, f"Qt's X11 plugin needs the system package "
                                  f"{XCB_CURSOR_PACKAGE} (e.g. `sudo apt-get install "
                                  f"{XCB_CURSOR_PACKAGE}`)", missing_package=XCB_CURSOR_PACKAGE)
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    # Qt's "Could not load ..." line says what failed; its libxcb-cursor0 line may be a guess.
    first = next((ln for ln in lines if "could not" in ln.lower()),
                 lines[0] if lines else "Qt could not start")
    return QtProbe(False, first.removeprefix("qt.qpa.plugin: "))


def probe_qt(env: dict[str, str] | None = None, timeout: float = PROBE_TIMEOUT_S) -> QtProbe:
    """Can Qt open a window with this environment? Never aborts or dumps core itself."""
    env = dict(os.environ if env is None else env)
    try:
        proc = subprocess.run(probe_command(), env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              preexec_fn=_no_core_dump if os.name == "posix" else None)
    except subprocess.TimeoutExpired:
        return QtProbe(False, f"Qt did not start within {timeout:.0f} s (a display that does "
                              "not answer?)")
    except OSError as e:
        return QtProbe(False, f"could not start the Qt check: {e}")
    if proc.returncode == 0:
        return QtProbe(True)
    return diagnose(proc.stderr, env)
