"""Ollama model names: ``[namespace/]model[:tag]``, checked before anything is uploaded.

Rules (ollama ``types/model/name.go``): each part starts with a letter, digit or ``_``; then
letters, digits, ``_``, ``-``; ``.`` is allowed in the model and the tag, not in the namespace;
at most 80 characters per part. Ollama compares names case-insensitively, so we ask for
lowercase to avoid two spellings of one model. The tag defaults to ``latest``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..events import TailorError

_PART = {
    "namespace": re.compile(r"^[a-z0-9_][a-z0-9_-]{0,79}$"),
    "model": re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,79}$"),
    "tag": re.compile(r"^[a-z0-9_][a-z0-9_.-]{0,79}$"),
}
DEFAULT_TAG = "latest"
_HINT = ("use lowercase letters, digits, '-', '_' and '.', e.g. my-model or my-model:v2 "
         "(optionally a namespace: me/my-model)")


class ModelNameError(TailorError):
    """A model name Ollama would refuse."""


@dataclass(frozen=True)
class ModelName:
    namespace: str
    model: str
    tag: str

    @property
    def full(self) -> str:
        """``namespace/model:tag`` as /api/tags lists it (no namespace for the default one)."""
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{ns}{self.model}:{self.tag}"

    def __str__(self) -> str:
        return self.full


def parse_model_name(name: str) -> ModelName:
    """Check ``name`` against Ollama's rules and return its parts; raise ModelNameError why not."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNameError("the Ollama model name is empty", hint=_HINT)
    if name != name.strip():
        raise ModelNameError(f"the Ollama model name {name!r} starts or ends with spaces",
                             hint=_HINT)
    if name != name.lower():
        raise ModelNameError(f"the Ollama model name {name!r} has uppercase letters",
                             hint=f"use {name.lower()!r} (Ollama names are lowercase)")
    rest, tag = name, DEFAULT_TAG
    if ":" in name:
        rest, tag = name.rsplit(":", 1)
        if not tag:
            raise ModelNameError(f"the Ollama model name {name!r} ends with ':' but has no tag",
                                 hint=_HINT)
    if "@" in name:
        raise ModelNameError(f"the Ollama model name {name!r} contains '@' (a digest)", hint=_HINT)
    segments = rest.split("/")
    if len(segments) > 2:
        raise ModelNameError(f"the Ollama model name {name!r} has more than one '/'",
                             hint="only one namespace is allowed: namespace/model[:tag]")
    namespace, model = (segments if len(segments) == 2 else ["", segments[0]])
    for kind, value in (("namespace", namespace), ("model", model), ("tag", tag)):
        if kind == "namespace" and len(segments) == 1:
            continue
        if not value:
            raise ModelNameError(f"the {kind} part of {name!r} is empty", hint=_HINT)
        if len(value) > 80:
            raise ModelNameError(f"the {kind} part of {name!r} is {len(value)} characters; "
                                 "the limit is 80", hint=_HINT)
        if not _PART[kind].match(value):
            bad = sorted({c for c in value if not re.match(r"[a-z0-9_.-]", c)})
            what = (f"has characters Ollama does not allow: {' '.join(map(repr, bad))}" if bad
                    else "must start with a letter, digit or '_'" if not re.match(r"[a-z0-9_]", value)
                    else "may not contain '.' (only the model and tag may)")
            raise ModelNameError(f"the {kind} part {value!r} of {name!r} {what}", hint=_HINT)
    if namespace == "library":
        namespace = ""
    return ModelName(namespace, model, tag)


def canonical(name: str) -> str:
    """A name as Ollama lists it, for comparing: 'x' and 'library/x:latest' -> 'x:latest'.
    Names from the server that do not parse are compared lowercased as they are."""
    try:
        return parse_model_name(name.lower()).full
    except ModelNameError:
        return name.lower()


def find_existing(name: str, existing: list[str]) -> str | None:
    """The entry of ``existing`` (names from /api/tags) that is the same model as ``name``."""
    want = canonical(name)
    for other in existing:
        if canonical(other) == want:
            return other
    return None
