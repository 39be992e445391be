"""A small Go ``text/template`` parser and renderer for the subset Ollama chat templates use.

Why: Ollama renders prompts with Go templates; we derive one from the model's Jinja template and
must check, on this machine and without Ollama, that it produces the same prompt text. Covered:
text, ``{{ }}`` with ``{{-``/``-}}`` trimming, comments, ``if``/``else if``/``else``/``end``,
``range`` (with ``$i, $m :=``), ``$x := ...``, ``$x = ...``, ``continue``, ``break``, fields
(``.Role``, ``$.System``, ``$m.Content``), string/bool/number literals, parentheses and the
functions ``eq ne not and or len printf`` (``%s``/``%d``/``%v``/``%%`` only).

``parse(text)`` raises ``GoTemplateError`` for what Go's parser rejects in that subset:
unbalanced ``{{ }}``, ``end`` without a block, a block left open, ``else`` outside a block.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_WS = " \t\r\n"


class GoTemplateError(ValueError):
    """The template does not parse (or uses something outside the supported subset)."""


# ----------------------------------------------------------------------------------------------
# Lexing: text and actions


def _split(text: str) -> list[tuple[str, str]]:
    """[("text", s) | ("action", inner)] with trim markers applied to the neighbouring text."""
    parts: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if trim_next:
            chunk = chunk.lstrip(_WS)
        if start < 0:
            if "}}" in chunk:
                raise GoTemplateError(f"unexpected '}}}}' without '{{{{' near {chunk[:40]!r}")
            parts.append(("text", chunk))
            break
        end = _find_close(text, start + 2)
        if end < 0:
            line = text.count("\n", 0, start) + 1
            raise GoTemplateError(f"unclosed action '{{{{' on line {line}")
        inner = text[start + 2:end]
        if inner.startswith("-") and inner[1:2] in tuple(_WS):
            chunk = chunk.rstrip(_WS)
            inner = inner[1:]
        trim_next = inner.endswith("-") and inner[-2:-1] in tuple(_WS)
        if trim_next:
            inner = inner[:-1]
        if "}}" in chunk:
            raise GoTemplateError(f"unexpected '}}}}' without '{{{{' near {chunk[:40]!r}")
        parts.append(("text", chunk))
        parts.append(("action", inner.strip(_WS)))
        pos = end + 2
    return [p for p in parts if p != ("text", "")]


def _find_close(text: str, i: int) -> int:
    """Index of the ``}}`` closing an action that starts at ``i`` (skipping string literals)."""
    quote = ""
    while i < len(text) - 1:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = ""
        elif c in "\"`":
            quote = c
        elif text.startswith("}}", i):
            return i
        elif text.startswith("{{", i):
            return -1
        i += 1
    return -1


_TOKEN = re.compile(r'''\s*(?:
    (?P<str>"(?:\\.|[^"\\])*"|`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<lp>\() | (?P<rp>\))
  | (?P<decl>:=) | (?P<assign>=) | (?P<comma>,) | (?P<pipe>\|)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
)''', re.X)


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    expr = expr.rstrip(_WS)
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise GoTemplateError(f"cannot read {expr[pos:]!r} in '{{{{ {expr} }}}}'")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ----------------------------------------------------------------------------------------------
# The tree


@dataclass
class Text:
    text: str


@dataclass
class Action:
    """Print a pipeline, or declare/assign a variable (then prints nothing)."""

    expr: list
    declare: str = ""
    assign: str = ""


@dataclass
class If:
    branches: list = field(default_factory=list)  # [(expr, [nodes])]; expr None = else


@dataclass
class Range:
    expr: list
    key_var: str = ""
    value_var: str = ""
    body: list = field(default_factory=list)
    else_body: list = field(default_factory=list)


@dataclass
class Loop:
    kind: str  # "continue" | "break"


class _Continue(Exception):
    pass


class _Break(Exception):
    pass


@dataclass
class Template:
    nodes: list
    source: str

    def render(self, data: dict[str, Any]) -> str:
        out: list[str] = []
        _exec(self.nodes, data, [{"$": data}], out)
        return "".join(out)


def _parse_expr(tokens: list[tuple[str, str]], pos: int = 0, stop: tuple = ()) -> tuple[list, int]:
    """A command: [operand, operand...] where an operand is a token or a nested command list."""
    cmd: list = []
    while pos < len(tokens) and tokens[pos][0] not in stop:
        kind, value = tokens[pos]
        if kind == "lp":
            sub, pos = _parse_expr(tokens, pos + 1, stop=("rp",))
            if pos >= len(tokens):
                raise GoTemplateError("unclosed '(' in expression")
            cmd.append(sub)
        elif kind in ("rp", "decl", "assign", "comma"):
            raise GoTemplateError(f"unexpected {value!r} in expression")
        elif kind == "pipe":
            raise GoTemplateError("pipelines with '|' are not supported here")
        else:
            cmd.append((kind, value))
        pos += 1
    if not cmd:
        raise GoTemplateError("missing value in action")
    return cmd, pos


def _parse_decl(inner: str) -> tuple[str, str, list]:
    """'$x := expr' / '$x = expr' / 'expr' -> (declared, assigned, expr)."""
    toks = _tokens(inner)
    if len(toks) >= 2 and toks[0][0] == "var" and toks[1][0] in ("decl", "assign"):
        expr, _ = _parse_expr(toks, 2)
        return (toks[0][1], "", expr) if toks[1][0] == "decl" else ("", toks[0][1], expr)
    expr, _ = _parse_expr(toks)
    return "", "", expr


def parse(source: str) -> Template:
    """Parse a Go template (the supported subset); raise GoTemplateError when it is malformed."""
    root: list = []
    stack: list[tuple[str, Any, list]] = []  # (kind, node, current body)
    body = root
    for kind, value in _split(source):
        if kind == "text":
            body.append(Text(value))
            continue
        if value.startswith("/*"):
            if not value.endswith("*/"):
                raise GoTemplateError("unclosed comment")
            continue
        word = value.split(None, 1)[0] if value else ""
        rest = value[len(word):].strip(_WS)
        if word == "if":
            node = If(branches=[(_parse_expr(_tokens(rest))[0], [])])
            body.append(node)
            stack.append(("if", node, body))
            body = node.branches[-1][1]
        elif word == "range":
            toks = _tokens(rest)
            key = val = ""
            if any(k == "decl" for k, _ in toks):
                names = []
                i = 0
                while toks[i][0] != "decl":
                    if toks[i][0] == "var":
                        names.append(toks[i][1])
                    elif toks[i][0] != "comma":
                        raise GoTemplateError(f"bad range declaration {rest!r}")
                    i += 1
                if len(names) == 1:
                    val = names[0]
                elif len(names) == 2:
                    key, val = names
                else:
                    raise GoTemplateError(f"bad range declaration {rest!r}")
                toks = toks[i + 1:]
            node = Range(expr=_parse_expr(toks)[0], key_var=key, value_var=val)
            body.append(node)
            stack.append(("range", node, body))
            body = node.body
        elif word == "else":
            if not stack:
                raise GoTemplateError("'else' outside of an if or range block")
            bkind, node, parent = stack[-1]
            if bkind == "if":
                if node.branches[-1][0] is None:
                    raise GoTemplateError("'else' after 'else' in an if block")
                if rest.startswith("if ") or rest == "if":
                    cond = rest[2:].strip(_WS)
                    node.branches.append((_parse_expr(_tokens(cond))[0], []))
                elif rest:
                    raise GoTemplateError(f"unexpected {rest!r} after 'else'")
                else:
                    node.branches.append((None, []))
                body = node.branches[-1][1]
            else:
                if rest:
                    raise GoTemplateError("'else if' inside a range block")
                body = node.else_body
        elif word == "end":
            if rest:
                raise GoTemplateError(f"unexpected {rest!r} after 'end'")
            if not stack:
                raise GoTemplateError("'end' without a matching if or range")
            _, _, body = stack.pop()
        elif word in ("continue", "break"):
            if not any(k == "range" for k, _, _ in stack):
                raise GoTemplateError(f"'{word}' outside of a range block")
            body.append(Loop(word))
        elif word in ("with", "define", "template", "block"):
            raise GoTemplateError(f"'{word}' is not supported by this renderer")
        else:
            declared, assigned, expr = _parse_decl(value)
            body.append(Action(expr=expr, declare=declared, assign=assigned))
    if stack:
        raise GoTemplateError(f"unclosed '{stack[-1][0]}' block: missing {{{{ end }}}}")
    return Template(root, source)


# ----------------------------------------------------------------------------------------------
# Execution


def truthy(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > 0
    return True


def _lookup(scopes: list[dict], name: str) -> Any:
    for scope in reversed(scopes):
        if name in scope:
            return scope[name]
    raise GoTemplateError(f"undefined variable {name}")


def _field(value: Any, names: list[str]) -> Any:
    for n in names:
        if isinstance(value, dict):
            value = value.get(n)
        else:
            value = getattr(value, n, None)
    return value


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match) -> str:
        if m.group(0) == "%%":
            return "%"
        return _to_str(next(it, ""))

    return re.sub(r"%%|%[sdv]", sub, fmt)


def _to_str(value: Any) -> str:
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
            "\\": "\\", '"': '"'}
_ESCAPE_RE = re.compile(r'\\(?:([abfnrtv\\"])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})'
                        r'|U([0-9a-fA-F]{8})|([0-7]{3}))')


def _unescape(body: str) -> str:
    """Go interpreted string literal escapes (\\n, \\", \\u00e9, \\x41, \\101 ...)."""
    def sub(m: re.Match) -> str:
        simple, hex2, u4, u8, octal = m.groups()
        if simple:
            return _ESCAPES[simple]
        if hex2 or octal:  # bytes in Go; only ASCII ones appear in our templates
            return chr(int(hex2, 16) if hex2 else int(octal, 8))
        code = int(u4 or u8, 16)
        if 0xD800 <= code <= 0xDFFF:
            raise GoTemplateError(f"invalid Unicode escape {m.group(0)!r} (a surrogate half)")
        return chr(code)

    return _ESCAPE_RE.sub(sub, body)


def _eval(cmd: list, dot: Any, scopes: list[dict]) -> Any:
    def operand(tok) -> Any:
        if isinstance(tok, list):
            return _eval(tok, dot, scopes)
        kind, value = tok
        if kind == "str":
            if value.startswith("`"):
                return value[1:-1]
            return _unescape(value[1:-1])
        if kind == "num":
            return float(value) if "." in value else int(value)
        if kind == "field":
            return dot if value == "." else _field(dot, value[1:].split("."))
        if kind == "var":
            name, *path = value.split(".")
            return _field(_lookup(scopes, name), path)
        if kind == "ident":
            if value in ("true", "false"):
                return value == "true"
            if value == "nil":
                return None
            raise GoTemplateError(f"function {value!r} needs arguments")
        raise GoTemplateError(f"unexpected {value!r}")

    head = cmd[0]
    if isinstance(head, tuple) and head[0] == "ident" and head[1] not in ("true", "false", "nil"):
        fn, args = head[1], cmd[1:]
        if fn == "and":
            result: Any = True
            for a in args:
                result = operand(a)
                if not truthy(result):
                    return result
            return result
        if fn == "or":
            result = False
            for a in args:
                result = operand(a)
                if truthy(result):
                    return result
            return result
        vals = [operand(a) for a in args]
        if fn == "eq":
            return any(vals[0] == v for v in vals[1:])
        if fn == "ne":
            return vals[0] != vals[1]
        if fn == "not":
            return not truthy(vals[0])
        if fn == "len":
            return len(vals[0])
        if fn == "printf":
            return _printf(vals[0], *vals[1:])
        raise GoTemplateError(f"function {fn!r} is not supported by this renderer")
    if len(cmd) != 1:
        raise GoTemplateError("can't give arguments to a non-function")
    return operand(head)


def _exec(nodes: list, dot: Any, scopes: list[dict], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, Text):
            out.append(node.text)
        elif isinstance(node, Action):
            value = _eval(node.expr, dot, scopes)
            if node.declare:
                scopes[-1][node.declare] = value
            elif node.assign:
                for scope in reversed(scopes):
                    if node.assign in scope:
                        scope[node.assign] = value
                        break
                else:
                    raise GoTemplateError(f"undefined variable {node.assign}")
            else:
                out.append(_to_str(value))
        elif isinstance(node, If):
            for cond, body in node.branches:
                if cond is None or truthy(_eval(cond, dot, scopes)):
                    scopes.append({})
                    try:
                        _exec(body, dot, scopes, out)
                    finally:
                        scopes.pop()
                    break
        elif isinstance(node, Range):
            items = _eval(node.expr, dot, scopes)
            pairs = list(items.items()) if isinstance(items, dict) else list(enumerate(items or []))
            if not pairs:
                scopes.append({})
                try:
                    _exec(node.else_body, dot, scopes, out)
                finally:
                    scopes.pop()
                continue
            for key, item in pairs:
                scope = {}
                if node.key_var:
                    scope[node.key_var] = key
                if node.value_var:
                    scope[node.value_var] = item
                scopes.append(scope)
                try:
                    _exec(node.body, item, scopes, out)
                except _Continue:
                    pass
                except _Break:
                    break
                finally:
                    scopes.pop()
        elif isinstance(node, Loop):
            raise _Continue() if node.kind == "continue" else _Break()


def render(source: str, data: dict[str, Any]) -> str:
    """Parse and render ``source`` with ``data`` (e.g. {"System": ..., "Messages": [...]})."""
    return parse(source).render(data)
