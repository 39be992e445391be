"""A small Modelfile parser for the tests, following ollama ``parser/parser.go``: one
``INSTRUCTION value`` per line (instruction case-insensitive, ``#`` comments); the value is
trimmed, then unquoted from ``"..."`` or triple quotes, which may span lines; ``PARAMETER`` takes
a name and a value; an unterminated quote or a missing FROM is an error."""
from __future__ import annotations

from dataclasses import dataclass, field

COMMANDS = {"from", "adapter", "template", "system", "parameter", "license", "message",
            "requires"}


class ModelfileSyntaxError(ValueError):
    pass


@dataclass
class Modelfile:
    commands: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> list[str]:
        return [v for k, v in self.commands if k == name]

    def parameters(self, name: str) -> list[str]:
        out = []
        for v in self.get("parameter"):
            key, _, value = v.partition(" ")
            if key == name:
                out.append(value)
        return out


def _unquote(value: str, line_no: int) -> str:
    value = value.strip()
    if value.startswith('"""'):
        if len(value) >= 6 and value.endswith('"""'):
            return value[3:-3]
        raise ModelfileSyntaxError(f"line {line_no}: unterminated triple quote")
    if value.startswith('"'):
        if len(value) >= 2 and value.endswith('"'):
            return value[1:-1]
        raise ModelfileSyntaxError(f"line {line_no}: unterminated quote")
    return value


def parse_modelfile(text: str) -> Modelfile:
    mf = Modelfile()
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        start = i + 1
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        name = word.lower()
        if name not in COMMANDS:
            raise ModelfileSyntaxError(f"line {start}: unknown instruction {word!r}")
        if name == "parameter":
            key, _, rest = rest.strip().partition(" ")
            if not key:
                raise ModelfileSyntaxError(f"line {start}: PARAMETER without a name")
        value = rest.strip()
        if value.startswith('"""'):
            # Gather lines until the closing triple quote.
            while not (len(value.rstrip()) >= 6 and value.rstrip().endswith('"""')):
                if i >= len(lines):
                    raise ModelfileSyntaxError(f"line {start}: unterminated triple quote")
                value += "\n" + lines[i]
                i += 1
        value = _unquote(value, start)
        mf.commands.append((name, f"{key} {value}" if name == "parameter" else value))
    if not mf.get("from"):
        raise ModelfileSyntaxError("no FROM line")
    return mf
