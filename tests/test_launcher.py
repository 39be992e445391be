"""`tailor` where Qt cannot open a window, and `tailor --self-test` (issue 16)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app.launcher import main as launcher_main
from app.qt_probe import QtProbe, diagnose, probe_qt

REPO = Path(__file__).resolve().parent.parent
# Display 99 with no X server behind it: a stale SSH session's $DISPLAY.
DEAD_DISPLAY = ":99"


def _env_with_dead_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM",
                                                             "WAYLAND_DISPLAY")}
    env["DISPLAY"] = DEAD_DISPLAY
    return env


def test_the_probe_names_a_display_nobody_answers_and_survives_qts_abort():
    # Qt itself aborts (SIGABRT, exit 134) here and blames libxcb-cursor0; the probe runs it
    # in a child and names the real cause.
    direct = subprocess.run([sys.executable, "-c", "from PySide6.QtWidgets import QApplication;"
                             " QApplication([])"], env=_env_with_dead_display(),
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert direct.returncode in (-signal.SIGABRT, 134), direct.returncode

    result = probe_qt(_env_with_dead_display())
    assert not result.ok
    assert result.reason == f"no X server answers at DISPLAY={DEAD_DISPLAY} (a closed or stale " \
                            "session?)"


def test_a_missing_xcb_cursor_library_names_the_package():
    qt_says = ("qt.qpa.plugin: From 6.5.0, xcb-cursor0 or libxcb-cursor0 is needed to load the "
               "Qt xcb platform plugin.\nqt.qpa.plugin: Could not load the Qt platform plugin "
               "\"xcb\" in \"\" even though it was found.\n")
    result = diagnose(qt_says, {"DISPLAY": ":0"}, display_reachable=lambda d: True,
                      lib_loadable=lambda name: name != "xcb-cursor")
    assert result.missing_package == "libxcb-cursor0"
    assert "sudo apt-get install libxcb-cursor0" in result.reason
    # with the library there, Qt's own line is passed on
    other = diagnose(qt_says, {"DISPLAY": ":0"}, display_reachable=lambda d: True,
                     lib_loadable=lambda name: True)
    assert other.reason.startswith("Could not load the Qt platform plugin \"xcb\"")


def test_tailor_falls_back_to_the_demo_when_qt_cannot_start(monkeypatch, capsys):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", DEAD_DISPLAY)
    # the fallback command is a quick one here; `tailor` itself runs `tailor demo`
    rc = launcher_main([], demo_argv=("library", "list"))
    err = capsys.readouterr().err
    assert rc == 0
    assert (f"tailor: the app cannot open a window (no X server answers at DISPLAY="
            f"{DEAD_DISPLAY}") in err
    assert "running the built-in demo headless instead" in err
    assert "Traceback" not in err


def test_tailor_app_exits_1_with_the_reason():
    proc = subprocess.run([sys.executable, "-m", "app.launcher", "app"],
                          env=_env_with_dead_display(), capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (f"tailor: the app cannot open a window: no X server answers "
                                   f"at DISPLAY={DEAD_DISPLAY} (a closed or stale session?)")


def test_tailor_app_with_an_injected_failing_probe(capsys):
    rc = launcher_main(["app"], probe=lambda: QtProbe(False, "Qt's X11 plugin needs libX"))
    assert rc == 1
    assert capsys.readouterr().err == "tailor: the app cannot open a window: Qt's X11 plugin " \
                                      "needs libX\n"


def test_self_test_from_a_source_checkout_passes(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path)}  # proves it touches no user folder either
    before = _self_test_temps()
    proc = subprocess.run([sys.executable, "-m", "app.launcher", "--self-test"], env=env,
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert len(lines) == 1
    verdict = lines[0]
    assert verdict.startswith("Tailor self-test PASSED in ")
    for shown in ("window opened (6 pages)", "demo job in a worker process: 6 training steps",
                  "Q8_0 GGUF verified in llama.cpp"):
        assert shown in verdict
    assert _self_test_temps() == before  # its temporary library is gone
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _self_test_temps() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("tailor-self-test-*")}


def test_a_failing_self_test_keeps_its_library_for_the_evidence(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "app.launcher", "--self-test", "--quant", "nope"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 1
    verdict = proc.stdout.strip()
    assert verdict.startswith("Tailor self-test FAILED in ")
    assert "unknown --quant 'nope'" in verdict and "Traceback" not in proc.stderr
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("tailor-self-test-")]
    assert len(kept) == 1 and (kept[0] / "library").is_dir()
    assert f"the temporary library is kept in {kept[0]}" in proc.stderr
