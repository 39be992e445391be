"""Schema detection and normalization: every supported record becomes an ``Example`` holding
either chat ``messages`` (rendered later with the model's chat template) or plain ``text``.

Schemas: chat (``messages`` [+ ``tools``]), ShareGPT (``conversations`` with from/value),
Alpaca (instruction/input/output), completion (prompt/completion, question/answer,
input/output), text. ``BadExample`` carries the reason an example is skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SCHEMAS = ("chat", "sharegpt", "alpaca", "completion", "text", "preference")
COMPLETION_KEYS = (("prompt", "completion"), ("question", "answer"), ("input", "output"),
                   ("prompt", "response"))
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "model": "assistant", "bot": "assistant",
                  "chatgpt": "assistant", "tool": "tool", "function": "tool",
                  "observation": "tool", "function_call": "assistant"}
# Message keys passed through to the chat template (tool calling).
PASSTHROUGH = ("tool_calls", "name", "tool_call_id")


class BadExample(ValueError):
    """An example that cannot be used; the message says why (without file:line)."""


@dataclass
class Example:
    source: str  # "file:line"
    messages: list[dict] | None = None
    tools: list | None = None
    text: str | None = None

    def key(self) -> str:
        """Identity for exact-duplicate detection."""
        return json.dumps([self.messages, self.tools, self.text], sort_keys=True,
                          ensure_ascii=False)

    def prompt_key(self) -> str:
        """Everything except the trained answers, for train/valid leakage."""
        if self.messages is None:
            return json.dumps(self.text, ensure_ascii=False)
        return json.dumps([[m["role"], m.get("content")] for m in self.messages
                           if m["role"] != "assistant"], ensure_ascii=False)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def detect_schema(obj: Any) -> str | None:
    """The schema an object's keys announce, or None when it has no known key."""
    if not isinstance(obj, dict):
        return None
    if is_preference(obj):  # before completion: TRL's pairs also have a 'prompt'
        return "preference"
    if "messages" in obj:
        return "chat"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj:
        return "alpaca"
    for p, c in COMPLETION_KEYS:
        if p in obj and c in obj:
            return "completion"
    if "text" in obj:
        return "text"
    if any(k in obj for pair in COMPLETION_KEYS for k in pair):
        return "completion"
    return None


def _text(value: Any, where: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise BadExample(f"{where} must be a string, found {json_type(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BadExample(f"{where} contains a lone surrogate (\\u{ord(value[e.start]):04x}), "
                         "which is not valid Unicode") from None
    if not allow_empty and not value.strip():
        raise BadExample(f"{where} is empty")
    if "\x00" in value:
        raise BadExample(f"{where} contains a NUL character")
    return value


def _content(value: Any, where: str, *, allow_empty: bool) -> str:
    # OpenAI-style content parts: [{"type": "text", "text": "..."}]
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else json_type(part)
                raise BadExample(f"{where}[{j}] is a {kind!s} part; only text is supported")
            parts.append(_text(part.get("text"), f"{where}[{j}].text", allow_empty=True))
        value = "".join(parts)
        if not allow_empty and not value.strip():
            raise BadExample(f"{where} is empty")
        return value
    return _text(value, where, allow_empty=allow_empty)


def _require(obj: dict, key: str) -> Any:
    if key not in obj:
        raise BadExample(f"missing field {key!r}")
    return obj[key]


def _check_turns(messages: list[dict]) -> None:
    if not any(m["role"] == "assistant" for m in messages):
        raise BadExample("no assistant message: nothing to train on")


def _chat(obj: dict, source: str) -> Example:
    messages = parse_messages(_require(obj, "messages"), "messages")
    _check_turns(messages)
    tools = obj.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise BadExample(f"field 'tools' must be an array, found {json_type(tools)}")
    return Example(source, messages=messages, tools=tools or None)


def parse_messages(raw: Any, name: str, *, expected: str = "an array of messages",
                   tool_calls: bool = True) -> list[dict]:
    """Field ``name``'s chat messages, each checked (role, content) and normalised; raises
    BadExample naming the message. ``expected``: what the field may be, for the message when
    it is not a list; ``tool_calls``: assistant tool calls (and PASSTHROUGH keys) are kept."""
    if not isinstance(raw, list):
        raise BadExample(f"field {name!r} must be {expected}, found {json_type(raw)}")
    if not raw:
        raise BadExample(f"field {name!r} is empty")
    messages = []
    for i, m in enumerate(raw):
        where = f"{name}[{i}]"
        if not isinstance(m, dict):
            raise BadExample(f"{where} must be an object with role and content, found "
                             f"{json_type(m)}")
        role = _require_in(m, "role", where)
        if not isinstance(role, str):
            raise BadExample(f"{where}.role must be a string, found {json_type(role)}")
        if role not in ROLES:
            raise BadExample(f"{where}: unknown role {role!r} (expected "
                             f"{', '.join(ROLES)})")
        has_calls = tool_calls and role == "assistant" and bool(m.get("tool_calls"))
        if "content" not in m and not has_calls:
            raise BadExample(f"{where}: missing field 'content'")
        content = m.get("content")
        if content is None and has_calls:
            content = ""
        msg = {"role": role,
               "content": _content(content, f"{where}.content",
                                   allow_empty=has_calls or role in ("system", "tool"))}
        for k in PASSTHROUGH if tool_calls else ():
            if k in m:
                msg[k] = m[k]
        messages.append(msg)
    return messages


def _require_in(m: dict, key: str, where: str) -> Any:
    if key not in m:
        raise BadExample(f"{where}: missing field {key!r}")
    return m[key]


def _sharegpt(obj: dict, source: str) -> Example:
    raw = _require(obj, "conversations")
    if not isinstance(raw, list):
        raise BadExample("field 'conversations' must be an array of turns, found "
                         f"{json_type(raw)}")
    if not raw:
        raise BadExample("field 'conversations' is empty")
    messages = []
    for i, t in enumerate(raw):
        where = f"conversations[{i}]"
        if not isinstance(t, dict):
            raise BadExample(f"{where} must be an object with from and value, found "
                             f"{json_type(t)}")
        who = _require_in(t, "from", where)
        if not isinstance(who, str):
            raise BadExample(f"{where}.from must be a string, found {json_type(who)}")
        role = SHAREGPT_ROLES.get(who.lower())
        if role is None:
            raise BadExample(f"{where}: unknown role {who!r} (expected human, gpt, system "
                             "or tool)")
        value = _require_in(t, "value", where)
        messages.append({"role": role, "content": _text(
            value, f"{where}.value", allow_empty=role in ("system", "tool"))})
    _check_turns(messages)
    tools = obj.get("tools")
    return Example(source, messages=messages, tools=tools if isinstance(tools, list) else None)


def _alpaca(obj: dict, source: str) -> Example:
    instruction = _text(_require(obj, "instruction"), "field 'instruction'")
    extra = obj.get("input", "")
    extra = "" if extra is None else _text(extra, "field 'input'", allow_empty=True)
    output = _text(_require(obj, "output"), "field 'output'")
    user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    system = obj.get("system")
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": _text(system, "field 'system'")})
    return Example(source, messages=messages)


def _completion(obj: dict, source: str) -> Example:
    for p, c in COMPLETION_KEYS:
        if p in obj and c in obj:
            break
    else:
        have = next(k for pair in COMPLETION_KEYS for k in pair if k in obj)
        partner = next(c if p == have else p for p, c in COMPLETION_KEYS if have in (p, c))
        raise BadExample(f"missing field {partner!r} (found {have!r})")
    prompt = _text(obj[p], f"field {p!r}")
    completion = _text(obj[c], f"field {c!r}")
    return Example(source, messages=[{"role": "user", "content": prompt},
                                     {"role": "assistant", "content": completion}])


def _plain(obj: dict, source: str) -> Example:
    return Example(source, text=_text(_require(obj, "text"), "field 'text'"))


_NORMALIZERS = {"chat": _chat, "sharegpt": _sharegpt, "alpaca": _alpaca,
                "completion": _completion, "text": _plain,
                "preference": lambda obj, source: normalize_preference(obj, source)}


def normalize(obj: Any, schema: str, source: str) -> Example:
    """The record as an Example of ``schema``; raises BadExample."""
    if not isinstance(obj, dict):
        raise BadExample(f"expected a JSON object {{...}} per example, found {json_type(obj)}")
    return _NORMALIZERS[schema](obj, source)


# At the end: engine/data/preference.py builds on the helpers above.
from .preference import is_preference, normalize_preference  # noqa: E402
