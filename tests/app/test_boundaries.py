"""Process boundaries: the app never imports MLX; the engine never imports Qt."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin",
                               "TAILOR_HOME": str(REPO / "test-output" / "boundary-home")})


def test_the_app_process_never_imports_mlx():
    """Building the whole window (every page) leaves MLX out of the UI process: the UI thread
    can never wait on it."""
    r = _run("""
        import sys
        from PySide6.QtCore import QSettings
        from app.main import make_app
        app = make_app([])
        import app.main_window, app.worker, app.jobs, app.commands
        import tempfile
        ini = tempfile.mkdtemp() + "/settings.ini"
        w = app.main_window.MainWindow(QSettings(ini, QSettings.Format.IniFormat),
                                       first_run_sample=False)
        for page in app.main_window.PAGES:
            w.show_page(page)
        bad = sorted(m for m in sys.modules if m == "mlx" or m.startswith(("mlx.", "mlx_lm")))
        print("MLX-MODULES", bad)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MLX-MODULES []" in r.stdout, r.stdout


def test_every_engine_module_imports_with_qt_blocked():
    """A meta-path finder refuses PySide6/shiboken6/pyqtgraph; every engine module must still
    import (lint-imports checks the static graph; this checks what really runs)."""
    r = _run("""
        import importlib, pkgutil, sys

        class NoQt:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph", "PyQt5", "PyQt6"):
                    raise ImportError(f"Qt is blocked: {name}")
                return None

        sys.meta_path.insert(0, NoQt())
        import engine
        names = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")
                 if m.name != "engine.__main__"]  # runs the CLI on import
        failed = []
        for name in names:
            try:
                importlib.import_module(name)
            except Exception as e:
                failed.append(f"{name}: {type(e).__name__}: {e}")
        qt = [m for m in sys.modules if m.split(".")[0] in ("PySide6", "shiboken6", "pyqtgraph")]
        print("MODULES", len(names))
        print("FAILED", failed)
        print("QT", qt)
    """)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "FAILED []" in r.stdout and "QT []" in r.stdout, r.stdout
    count = int(r.stdout.split("MODULES ")[1].split()[0])
    assert count >= 10, r.stdout


def test_the_frozen_entry_point_runs_engine_workers():
    """In the .app, ``sys.executable -m engine ...`` reaches packaging/entry.py, which must run
    the engine CLI (not open a second window)."""
    r = subprocess.run([sys.executable, str(REPO / "packaging" / "entry.py"), "-m", "engine",
                        "library", "list", "--events", "-", "--quiet"], cwd=REPO,
                       capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin",
                            "TAILOR_HOME": str(REPO / "test-output" / "boundary-home")})
    assert r.returncode == 0, r.stderr[-2000:]
    from engine.events import Finished, decode_event

    events = [decode_event(l) for l in r.stdout.splitlines() if l.strip()]
    assert isinstance(events[-1], Finished)


def test_packaging_files_parse():
    """The macOS build cannot run here; at least the spec is valid Python, the script valid
    bash, the entitlements valid plist, and the spec puts mlx.metallib in the bundle."""
    import plistlib

    spec = (REPO / "packaging" / "tailor.spec").read_text()
    compile(spec, "tailor.spec", "exec")
    assert "mlx.metallib" in spec and "BUNDLE(" in spec and "info_plist" in spec
    r = subprocess.run(["bash", "-n", str(REPO / "packaging" / "build_macos.sh")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ent = plistlib.loads((REPO / "packaging" / "entitlements.plist").read_bytes())
    assert ent["com.apple.security.cs.allow-jit"] is True
