"""The `tailor` console script: engine commands, the app, or the headless demo.

    tailor                 the app where a display is usable, else the built-in demo
    tailor app             the app, or exit 1 with the reason it cannot open a window
    tailor --self-test     the window offscreen + the tiny demo job through a real worker
    tailor COMMAND ...     an engine command (see engine/cli.py)

Imports no Qt at module level, so `tailor train ...` works where PySide6 is missing.
"""
from __future__ import annotations

import os
import sys

SELF_TEST = "--self-test"
QT_PROBE = "--qt-probe"  # internal: the child process of app/qt_probe.py


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def qt_unusable_reason(probe=None) -> str:
    """Why Qt cannot open a window here ("" when it can). On macOS and Windows Qt's platform
    plugin ships inside PySide6, so only Linux (X11/Wayland libraries, $DISPLAY) is probed."""
    if sys.platform in ("darwin", "win32") and probe is None:
        return ""
    try:
        import PySide6  # noqa: F401
    except ImportError as e:
        return f"PySide6 is not installed ({e})"
    from .qt_probe import probe_qt

    result = (probe or probe_qt)()
    return "" if result.ok else result.reason


def main(argv: list[str] | None = None, *, demo_argv: tuple[str, ...] = ("demo",),
         display: bool | None = None, probe=None) -> int:
    """``demo_argv``, ``display`` and ``probe`` (a function returning a QtProbe) let tests run a
    short fallback and force the headless path or a failing Qt."""
    from engine.stdio import ensure_standard_fds

    ensure_standard_fds()  # a closed stdin would break MLX's weight loading (engine/stdio.py)
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [QT_PROBE]:
        from .qt_probe import run_probe_here

        return run_probe_here()
    if argv[:1] == [SELF_TEST]:
        from .self_test import main as self_test_main

        return self_test_main(argv[1:])
    from engine.cli import main as engine_main

    if argv[:1] == ["app"]:
        reason = qt_unusable_reason(probe)
        if reason:
            print(f"tailor: the app cannot open a window: {reason}", file=sys.stderr)
            return 1
        from app.main import main as app_main

        return app_main(argv[1:])
    if argv:
        return engine_main(argv)
    if has_display() if display is None else display:
        reason = qt_unusable_reason(probe)
        if not reason:
            from app.main import main as app_main

            return app_main([])
        print(f"tailor: the app cannot open a window ({reason}); running the built-in demo "
              "headless instead (`tailor demo`).", file=sys.stderr)
    else:
        print("tailor: no display found; running the built-in demo headless instead "
              "(`tailor demo`).", file=sys.stderr)
    import importlib.util

    if importlib.util.find_spec("engine.demo") is None:
        print("tailor: this build has no demo; see `tailor --help` for the engine commands",
              file=sys.stderr)
        return 2
    return engine_main(list(demo_argv))


if __name__ == "__main__":
    sys.exit(main())
