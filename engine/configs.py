"""Dataclass configs whose field help feeds both the CLI (--help) and the GUI tooltips."""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any


def opt(default: Any, help: str, *, choices: list | None = None, minimum: float | None = None,
        maximum: float | None = None, flag: str | None = None, **kw) -> Any:
    """A dataclass field with help text, allowed values and range for validation and UIs."""
    meta = {"help": help, "choices": choices, "min": minimum, "max": maximum, "flag": flag}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def _base_type(tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:  # Optional[X] and X | None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    return tp


def add_dataclass_args(parser: argparse.ArgumentParser, cls, skip: set[str] = frozenset()) -> None:
    """Add one ``--flag`` per dataclass field (defaults left as None so presets can fill in)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("help"):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        tp = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f.metadata["help"] + (f" (default: {default})" if default is not None else "")
        help_text = help_text.replace("%", "%%")  # argparse %-formats help ("30% slower")
        if tp is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=help_text)
        elif typing.get_origin(tp) is list:
            parser.add_argument(flag, dest=f.name, nargs="+", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=f.name, type=tp if tp in (int, float, str) else str,
                                choices=f.metadata.get("choices"), default=None, help=help_text)


def overrides_from_args(cls, ns: argparse.Namespace) -> dict[str, Any]:
    """The fields the user actually gave on the command line."""
    return {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)
            if getattr(ns, f.name, None) is not None}


def validate_ranges(cfg) -> list[str]:
    """Messages for every field outside its declared choices or [min, max]."""
    problems = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
        if v is None:
            continue
        if choices and v not in choices:
            problems.append(f"{f.name} = {v!r} is not one of {', '.join(map(str, choices))}")
        if lo is not None and isinstance(v, (int, float)) and v < lo:
            problems.append(f"{f.name} = {v} is below the minimum {lo}")
        if hi is not None and isinstance(v, (int, float)) and v > hi:
            problems.append(f"{f.name} = {v} is above the maximum {hi}")
    return problems
