"""The options every command takes (--events, --quiet), for the command modules' parsers.

Apart from engine/cli.py so a command module imports it without importing the runner (which
sits above every command in the engine's layers; see pyproject.toml).
"""
from __future__ import annotations

import argparse


def _add_common(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """--events and --quiet; with ``suppress`` they default to SUPPRESS, so an action's parser
    keeps the command-level values when they are not repeated after the action."""
    default = {"default": argparse.SUPPRESS} if suppress else {}
    p.add_argument("--events", metavar="FILE|-", **default,
                   help="write progress events as JSON lines to FILE, or '-' for stdout "
                        "(the terminal view then goes to stderr)")
    p.add_argument("--quiet", action="store_true", **default,
                   help="no terminal progress view (failures and cancellations still print)")


def add_action(sub, *args, **kwargs) -> argparse.ArgumentParser:
    """A sub-action parser (``tailor library list``) that takes --events/--quiet after the action
    too, as the app appends them."""
    p = sub.add_parser(*args, **kwargs)
    _add_common(p, suppress=True)
    return p
