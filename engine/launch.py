"""`tailor` with no arguments: open the app, or run the demo where there is no display."""
from __future__ import annotations

import os
import sys


def has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":
        return False
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def launch_app_or_demo() -> int:
    if has_display():
        try:
            from app.main import main as app_main  # the GUI lives outside the engine
        except ImportError as e:  # PySide6 missing: say so, then fall back to the demo
            print(f"tailor: the app cannot start ({e}); running the headless demo instead",
                  file=sys.stderr)
        else:
            return app_main([])
    else:
        print("tailor: no display found; running the built-in demo headless instead "
              "(`tailor demo`).", file=sys.stderr)
    from .cli import main

    return main(["demo"])
