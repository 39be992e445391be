"""`--help` of every command and sub-action reads as prose, never argparse internals (issue 13:
an unescaped '%' in --grad-checkpoint's help printed argparse's own dict of the option)."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from engine.cli import COMMANDS, build_parser

INTERNALS = ["%(", "{'", "<class", "<function", "Namespace(", "PosixPath(", "dict_", "%%",
             "option_strings"]


def every_help(monkeypatch) -> dict[str, str]:
    """'tailor', 'tailor train', 'tailor library rename', ... -> its rendered help."""
    monkeypatch.setenv("TAILOR_FULL_HELP", "1")  # configure every command, not only argv[1]
    monkeypatch.setenv("COLUMNS", "100")
    found: dict[str, str] = {}

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        found[path] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")

    walk(build_parser(), "tailor")
    return found


def test_every_command_and_action_is_rendered(monkeypatch):
    helps = every_help(monkeypatch)
    assert {f"tailor {c}" for c in COMMANDS} <= set(helps)
    assert "tailor library rename" in helps and "tailor model download" in helps


@pytest.mark.parametrize("command", ["tailor", *(f"tailor {c}" for c in COMMANDS)])
def test_help_has_no_argparse_internals(monkeypatch, command):
    helps = every_help(monkeypatch)
    mine = {command} if command == "tailor" else \
        {p for p in helps if p == command or p.startswith(command + " ")}
    for path in sorted(mine):
        text = helps[path]
        leaked = [s for s in INTERNALS if s in text]
        assert not leaked, f"`{path} --help` shows {leaked}:\n{text}"


def test_grad_checkpoint_help_says_its_cost(monkeypatch):
    text = " ".join(every_help(monkeypatch)["tailor train"].split())
    assert "less memory, about 30% slower (default: False)" in text
    assert "30{" not in text  # (argparse read '% s' as a format and printed its dict there)


def test_train_help_from_the_command_line():
    """The real entry point (only argv[1]'s module configured) prints the same clean text."""
    out = subprocess.run([sys.executable, "-m", "engine", "train", "--help"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "about 30% slower" in " ".join(out.stdout.split())
    assert "{'" not in out.stdout and "option_strings" not in out.stdout
