"""The `tailor` console script: engine commands, the app, or the headless demo.

Imports no Qt at module level, so `tailor train ...` works where PySide6 is missing.
"""
from __future__ import annotations

import os
import sys


def has_display() -> bool:
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None, *, demo_argv: tuple[str, ...] = ("demo",),
         display: bool | None = None) -> int:
    """``demo_argv`` and ``display`` let tests run a short demo and force the headless path."""
    from engine.cli import main as engine_main

    argv = sys.argv[1:] if argv is None else argv
    if argv:
        return engine_main(argv)
    if has_display() if display is None else display:
        try:
            from app.main import main as app_main
        except ImportError as e:
            print(f"tailor: the app cannot start ({e}); running the headless demo instead",
                  file=sys.stderr)
        else:
            return app_main([])
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
