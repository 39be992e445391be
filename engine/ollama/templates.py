"""The model's Jinja chat template → an Ollama Go template and the stop list.

Fine-tunes imported into Ollama by hand ramble or ignore roles when the template or the stops
are missing. We send both explicitly:

1. Known families (ChatML/Qwen, Llama 3, Llama 2 ``[INST] <<SYS>>``, Gemma, Phi-3) get a
   hand-written Go template in the style of Ollama's own template library.
2. Anything else (or a family template that does not reproduce this model's Jinja output) is
   converted by rendering the Jinja template with placeholder messages and cutting the output
   into per-role pieces (the idea of huggingface.js ``ollama-utils``; our own code).
3. Every candidate is checked: rendered with ``engine.ollama.gotemplate`` for probe
   conversations, it must give exactly the text the Jinja template gives. The first candidate
   that passes wins; ``OllamaTemplate.verified`` says whether one did.

Conventions (Ollama's): ``.Messages`` holds every message including the system one, which
Ollama puts first; ``.System`` is the system text. BOS is not written by the template when the
tokenizer adds it (Ollama's runner does); later BOS/EOS tokens are written as text.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..data.chat_template import TemplateLimitError, TemplateRaised, compile_chat_template
from ..events import TailorError
from . import gotemplate

# Placeholders that no template touches (Unicode private-use characters).
_S, _U1, _A1, _U2 = "\ue000S\ue001", "\ue000U1\ue001", "\ue000A1\ue001", "\ue000U2\ue001"
SYSTEM_JOIN = "\n\n"  # how a system prompt is merged into the first user turn (no system role)

# Tokens that look special inside a template: <|x|>, <x_y>, [INST], <<SYS>>.
_SPECIAL = re.compile(r"<\|[^|<>\s]+\|>|<[a-z_]+_of_turn>|\[/?INST\]|<</?SYS>>|<\uff5c[^<>]+\uff5c>")


@dataclass
class TokenizerInfo:
    """What the conversion needs besides the template (from the GGUF or tokenizer_config)."""

    bos_token: str = ""
    eos_token: str = ""  # the turn-end token the model emits
    add_bos_token: bool = False
    extra_eos_tokens: list[str] = field(default_factory=list)

    @classmethod
    def coerce(cls, value: Any) -> "TokenizerInfo":
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            return cls(bos_token=value.get("bos_token") or "", eos_token=value.get("eos_token") or "",
                       add_bos_token=bool(value.get("add_bos_token", False)),
                       extra_eos_tokens=list(value.get("extra_eos_tokens") or []))
        raise TypeError(f"tokenizer_info must be TokenizerInfo or dict, not {type(value)}")


@dataclass
class OllamaTemplate:
    family: str  # chatml | llama3 | llama2 | gemma | phi3 | generic | none
    template: str
    stops: list[str]
    verified: bool
    system_supported: bool = True
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"family": self.family, "template": self.template, "stops": self.stops,
                "verified": self.verified, "system_supported": self.system_supported,
                "notes": self.notes}


# ----------------------------------------------------------------------------------------------
# Jinja rendering as transformers does it (bounded: a template bomb ends in TemplateLimitError)


def jinja_renderer(jinja_template: str, info: TokenizerInfo,
                   origin: str = "the chat template converted for Ollama"
                   ) -> Callable[[list[dict], bool], str]:
    """``render(messages, add_generation_prompt)`` -> the prompt text as Ollama should see it
    (the leading BOS removed when the tokenizer adds it). Renders in Tailor's one bounded
    sandbox (engine.data.chat_template), with a fixed date so renders are comparable. Raises
    TemplateRaised (raise_exception), TemplateLimitError (time/size limits) or jinja errors.
    """
    template = compile_chat_template(jinja_template, origin, fixed_date="26 Jul 2024")

    def render(messages: list[dict], add_generation_prompt: bool = True) -> str:
        text = template.render({"messages": messages,
                                "add_generation_prompt": add_generation_prompt,
                                "bos_token": info.bos_token, "eos_token": info.eos_token,
                                "tools": None})
        if info.add_bos_token and info.bos_token and text.startswith(info.bos_token):
            text = text[len(info.bos_token):]
        return text

    return render


def go_messages(messages: list[dict]) -> dict:
    """The data Ollama passes a messages template: .System (joined) and .Messages."""
    system = SYSTEM_JOIN.join(m["content"] for m in messages if m["role"] == "system")
    return {"System": system,
            "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages],
            "Tools": None, "Response": ""}


def probe_conversations() -> list[list[dict]]:
    """Conversations every candidate must render identically to the Jinja template."""
    sys_ = {"role": "system", "content": "You answer in rhymes."}
    u1 = {"role": "user", "content": "Hello there"}
    a1 = {"role": "assistant", "content": "Hi, how can I help?"}
    u2 = {"role": "user", "content": "Tell me a joke"}
    return [[u1], [u1, a1, u2], [sys_, u1], [sys_, u1, a1, u2]]


def _merge_system(messages: list[dict]) -> list[dict]:
    """For templates without a system role: the system text opens the first user turn."""
    system = SYSTEM_JOIN.join(m["content"] for m in messages if m["role"] == "system")
    rest = [dict(m) for m in messages if m["role"] != "system"]
    if system:
        for m in rest:
            if m["role"] == "user":
                m["content"] = system + SYSTEM_JOIN + m["content"]
                break
    return rest


def check_template(go_template: str, render_jinja, system_supported: bool
                   ) -> tuple[bool, str]:
    """(ok, detail): does the Go template reproduce the Jinja output on every probe?"""
    try:
        parsed = gotemplate.parse(go_template)
    except gotemplate.GoTemplateError as e:
        return False, f"Go template does not parse: {e}"
    for conv in probe_conversations():
        try:
            want = render_jinja(conv if system_supported else _merge_system(conv), True)
        except TemplateLimitError:
            raise  # a hostile or broken template: stop, not "unverified"
        except Exception as e:  # the model's own template refuses this conversation
            return False, f"Jinja template failed on a probe: {e}"
        got = parsed.render(go_messages(conv))
        if got != want:
            return False, f"differs for {[m['role'] for m in conv]}: {got!r} != {want!r}"
    return True, "matches the Jinja template on all probe conversations"


# ----------------------------------------------------------------------------------------------
# Known families


def _lit(text: str) -> str:
    """Literal text for a Go template ('{{'/'}}' inside it go through a string literal)."""
    if "{{" not in text and "}}" not in text:
        return text
    # Non-ASCII stays literal: json's \ud83d\ude00 surrogate pairs are invalid in Go strings.
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}"


def detect_family(jinja_template: str) -> str:
    t = jinja_template or ""
    if "<|im_start|>" in t:
        return "chatml"
    if "<|start_header_id|>" in t:
        return "llama3"
    if "<start_of_turn>" in t:
        return "gemma"
    if "<|turn>" in t and "<turn|>" in t:
        return "gemma4"
    if "<|user|>" in t and "<|assistant|>" in t and "<|end|>" in t:
        return "phi3"
    if "<|user|>" in t and "<|assistant|>" in t:
        return "tulu"  # OLMo 2: turns end with a newline, assistant turns with EOS
    if "<|start_of_role|>" in t:
        return "granite"
    if "[INST]" in t and "<<SYS>>" in t:
        return "llama2"
    if "[INST]" in t:
        return "mistral"
    return "generic" if t.strip() else "none"


FAMILY_STOPS = {
    "chatml": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"],
    "llama3": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    "gemma": ["<start_of_turn>", "<end_of_turn>"],
    "gemma4": ["<turn|>", "<|turn>"],
    "phi3": ["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"],
    "llama2": ["[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"],
    "mistral": ["[INST]", "[/INST]"],
    "tulu": ["<|user|>", "<|assistant|>", "<|system|>"],
    "granite": ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>"],
}


def _default_system(render_jinja, system_turn: str) -> str | None:
    """The system prompt a template inserts when the conversation has none: group 1 of
    ``system_turn`` (a regex) matched at the start of a one-user-turn render."""
    try:
        text = render_jinja([{"role": "user", "content": _U1}], True)
    except TemplateLimitError:
        raise
    except Exception:
        return None
    m = re.match(system_turn, text, re.S)
    return m.group(1) if m else None


def _chatml_default_system(render_jinja) -> str | None:
    """The system prompt a ChatML template inserts when there is none (Qwen2.5 does)."""
    return _default_system(render_jinja, r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n")


def _granite_default_system(render_jinja, eos: str) -> str | None:
    """The system turn Granite's template writes when there is none (its knowledge cut-off)."""
    return _default_system(render_jinja, r"<\|start_of_role\|>system<\|end_of_role\|>(.*?)"
                           + re.escape(eos) + "\n")


def _newer_family_template(family: str, info: TokenizerInfo, render_jinja
                           ) -> tuple[str, bool] | None:
    """OLMo 2 (Tulu) and Granite (issue 17)."""
    eos = info.eos_token or "</s>"
    if family == "tulu":
        # The template writes BOS itself; a tokenizer that adds it has it stripped (Ollama adds).
        bos = "" if info.add_bos_token else _lit(info.bos_token)
        return (bos + "{{ range .Messages }}{{ if eq .Role \"system\" }}<|system|>\n"
                "{{ .Content }}\n{{ else if eq .Role \"user\" }}<|user|>\n{{ .Content }}\n"
                "{{ else if eq .Role \"assistant\" }}<|assistant|>\n{{ .Content }}" + _lit(eos)
                + "\n{{ end }}{{ end }}<|assistant|>\n"), True
    if family == "granite":
        default = _granite_default_system(render_jinja, eos)
        head = ("{{ if not .System }}<|start_of_role|>system<|end_of_role|>" + _lit(default)
                + _lit(eos) + "\n{{ end }}" if default else "")
        return (head + "{{ range .Messages }}<|start_of_role|>{{ .Role }}<|end_of_role|>"
                "{{ .Content }}" + _lit(eos) + "\n{{ end }}<|start_of_role|>assistant"
                "<|end_of_role|>"), True
    return None


def family_template(family: str, info: TokenizerInfo, render_jinja) -> tuple[str, bool] | None:
    """(go_template, system_supported) for a known family, or None."""
    eos = info.eos_token or "</s>"
    bos = info.bos_token or "<s>"
    if family == "chatml":
        default = _chatml_default_system(render_jinja)
        head = ("{{ if not .System }}<|im_start|>system\n" + _lit(default) + "<|im_end|>\n{{ end }}"
                if default else "")
        return (head + "{{ range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
                "{{ end }}<|im_start|>assistant\n"), True
    if family == "llama3":
        return ("{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
                ), True
    if family == "phi3":
        return ("{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}"
                "<|assistant|>\n"), True
    if family == "gemma":
        return ("{{ $first := true }}{{ range .Messages }}"
                "{{ if eq .Role \"user\" }}<start_of_turn>user\n"
                "{{ if and $first $.System }}{{ $.System }}" + SYSTEM_JOIN + "{{ end }}"
                "{{ .Content }}<end_of_turn>\n{{ $first = false }}"
                "{{ else if eq .Role \"assistant\" }}<start_of_turn>model\n"
                "{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}<start_of_turn>model\n"), False
    if family == "gemma4":  # turns as <|turn>role ... <turn|>; the answer opens an empty thought
        return ("{{ range .Messages }}{{ if eq .Role \"system\" }}<|turn>system\n{{ .Content }}"
                "<turn|>\n{{ else if eq .Role \"user\" }}<|turn>user\n{{ .Content }}<turn|>\n"
                "{{ else if eq .Role \"assistant\" }}<|turn>model\n{{ .Content }}<turn|>\n"
                "{{ end }}{{ end }}<|turn>model\n<|channel>thought\n<channel|>"), True
    if family == "llama2":
        # The system prompt sits inside the first [INST]; later user turns start with BOS.
        return ("{{ $first := true }}{{ range .Messages }}"
                "{{ if eq .Role \"user\" }}{{ if not $first }}" + _lit(bos) + "{{ end }}[INST] "
                "{{ if and $first $.System }}<<SYS>>\n{{ $.System }}\n<</SYS>>\n\n{{ end }}"
                "{{ .Content }} [/INST]{{ $first = false }}"
                "{{ else if eq .Role \"assistant\" }} {{ .Content }} " + _lit(eos) +
                "{{ end }}{{ end }}"), True
    return _newer_family_template(family, info, render_jinja)


# ----------------------------------------------------------------------------------------------
# Generic conversion: render with placeholders, cut into per-role pieces


_TOKENISH = re.compile(r"<[^<>\s]*>|\[/?[A-Za-z]+\]")


def _common_prefix(a: str, b: str) -> str:
    """The common prefix, backed off so it never ends inside a special token like <|user|>."""
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    changed = True
    while changed:  # backing off in one string can make a token straddle in the other
        changed = False
        for text in (a, b):
            for m in _TOKENISH.finditer(text):
                if m.start() < n < m.end():
                    n, changed = m.start(), True
    return a[:n]


def _between(text: str, *marks: str) -> list[str]:
    """Split ``text`` at the placeholders, in order; raise ValueError if one is missing."""
    pieces, pos = [], 0
    for m in marks:
        i = text.index(m, pos)
        pieces.append(text[pos:i])
        pos = i + len(m)
    pieces.append(text[pos:])
    return pieces


def generic_template(render_jinja) -> tuple[str, bool]:
    """Build a Go template from placeholder renders. Raises ValueError when the Jinja output
    cannot be cut into per-role pieces (e.g. content is transformed, or turns depend on each
    other in ways a per-message template cannot express)."""
    u, a = "user", "assistant"
    r3 = render_jinja([{"role": u, "content": _U1}, {"role": a, "content": _A1},
                       {"role": u, "content": _U2}], True)
    p0, y, z, x = _between(r3, _U1, _A1, _U2)
    r2n = render_jinja([{"role": u, "content": _U1}, {"role": a, "content": _A1}], False)
    w = _between(r2n, _U1, _A1)[2]
    post_u = _common_prefix(x, y)
    pre_a, gen = y[len(post_u):], x[len(post_u):]
    post_a = _common_prefix(z, w)
    pre_u = z[len(post_a):]
    # The first user turn may open differently (a preamble, a default system prompt, no BOS).
    first_pre_u = pre_u if p0.endswith(pre_u) else p0
    head_nosys = p0[:len(p0) - len(first_pre_u)]

    system_supported = True
    pre_s = post_s = ""
    try:
        rs = render_jinja([{"role": "system", "content": _S}, {"role": u, "content": _U1},
                           {"role": a, "content": _A1}, {"role": u, "content": _U2}], True)
        ps, q, rest = _between(rs, _S, _U1)
        if rest != r3[len(p0) + len(_U1):]:
            raise ValueError("the system message changes later turns")
        if not q.endswith(first_pre_u):
            raise ValueError("the system message changes the first user turn")
        post_s = q[:len(q) - len(first_pre_u)]
        pre_s = ps
    except (TemplateRaised, ValueError):
        system_supported = False

    first = first_pre_u != pre_u
    uses_first = first or not system_supported
    parts = ["{{ $first := true }}"] if uses_first else []
    if system_supported:
        if head_nosys:
            parts.append("{{ if not .System }}" + _lit(head_nosys) + "{{ end }}")
        parts.append("{{ range .Messages }}{{ if eq .Role \"system\" }}" + _lit(pre_s) +
                     "{{ .Content }}" + _lit(post_s))
    else:
        parts.append(_lit(head_nosys) + "{{ range .Messages }}{{ if eq .Role \"system\" }}")
    user_pre = (("{{ if $first }}" + _lit(first_pre_u) + "{{ else }}" + _lit(pre_u) + "{{ end }}")
                if first else _lit(pre_u))
    merged = ("" if system_supported else
              "{{ if and $first $.System }}{{ $.System }}" + _lit(SYSTEM_JOIN) + "{{ end }}")
    parts.append("{{ else if eq .Role \"user\" }}" + user_pre + merged + "{{ .Content }}" +
                 _lit(post_u) + ("{{ $first = false }}" if uses_first else ""))
    parts.append("{{ else if eq .Role \"assistant\" }}" + _lit(pre_a) + "{{ .Content }}" +
                 _lit(post_a) + "{{ end }}{{ end }}" + _lit(gen))
    return "".join(parts), system_supported


# ----------------------------------------------------------------------------------------------
# Stops


def stop_list(go_template: str, family: str, info: TokenizerInfo) -> list[str]:
    """The turn-end token first, then the family's markers and the template's special tokens."""
    stops: list[str] = []
    for s in [info.eos_token, *info.extra_eos_tokens, *FAMILY_STOPS.get(family, []),
              *_SPECIAL.findall(go_template)]:
        # BOS is no stop, unless it is also the turn-end token (OLMo 2, Granite: one token)
        if s and s not in stops and (s != info.bos_token or s == info.eos_token):
            stops.append(s)
    return stops


# ----------------------------------------------------------------------------------------------
# The entry points


def convert_chat_template(jinja_template: str | None, tokenizer_info: Any = None) -> OllamaTemplate:
    """Convert a Jinja chat template; see the module docstring. Never raises for a template
    it cannot convert exactly: the best candidate comes back with ``verified=False`` and notes.
    """
    info = TokenizerInfo.coerce(tokenizer_info)
    family = detect_family(jinja_template or "")
    if family == "none":
        template = ("{{ if .System }}{{ .System }}\n\n{{ end }}"
                    "{{ range .Messages }}{{ .Content }}\n{{ end }}")
        return OllamaTemplate("none", template, stop_list(template, "none", info), False, True,
                              ["the model has no chat template: a plain-text template is used; "
                               "a base model is not trained to stop after an answer"])
    try:
        render_jinja = jinja_renderer(jinja_template, info)
    except Exception as e:
        raise TailorError(f"the model's chat template is not valid Jinja: {e}",
                          hint="fix tokenizer.chat_template / tokenizer_config.json") from e
    notes: list[str] = []
    candidates: list[tuple[str, str, bool]] = []
    known = family_template(family, info, render_jinja)
    if known:
        candidates.append((family, *known))
    try:
        candidates.append(("generic", *generic_template(render_jinja)))
    except TemplateLimitError:
        raise
    except Exception as e:
        notes.append(f"placeholder conversion failed: {e}")
    for name, template, system_ok in candidates:
        ok, detail = check_template(template, render_jinja, system_ok)
        if ok:
            fam = family if name != "generic" or family == "generic" else f"{family}/generic"
            return OllamaTemplate(name if name != "generic" else fam, template,
                                  stop_list(template, family, info), True, system_ok, notes)
        notes.append(f"{name} template: {detail}")
    if not candidates:
        raise TailorError("could not derive an Ollama template from the model's chat template",
                          hint="; ".join(notes))
    name, template, system_ok = candidates[0]
    return OllamaTemplate(name, template, stop_list(template, family, info), False, system_ok,
                          notes)


def chat_template_to_ollama(jinja_template: str | None, tokenizer_info: Any = None
                            ) -> tuple[str, list[str]]:
    """(go_template, stops) for the Jinja chat template (the team interface)."""
    result = convert_chat_template(jinja_template, tokenizer_info)
    return result.template, result.stops


# ----------------------------------------------------------------------------------------------
# Where the template comes from


def read_gguf_chat_info(gguf_path: Path | str) -> tuple[str | None, TokenizerInfo, dict]:
    """(chat_template, TokenizerInfo, facts) from a GGUF's metadata. ``facts`` has
    ``architecture``, ``file_type``, ``general_type``. Raises TailorError on an unreadable file."""
    import gguf

    path = Path(gguf_path)
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise TailorError(f"{path} is not a readable GGUF file: {e}") from e

    def value(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None:
            return None
        try:
            return f.contents()
        except Exception:
            return None

    tokens_field = reader.fields.get("tokenizer.ggml.tokens")

    def token(idx) -> str:
        if idx is None or tokens_field is None:
            return ""
        try:
            return bytes(tokens_field.parts[tokens_field.data[int(idx)]]).decode("utf-8")
        except Exception:
            return ""

    add_bos = value("tokenizer.ggml.add_bos_token")
    info = TokenizerInfo(bos_token=token(value("tokenizer.ggml.bos_token_id")),
                         eos_token=token(value("tokenizer.ggml.eos_token_id")),
                         add_bos_token=bool(add_bos) if add_bos is not None else True)
    eot = token(value("tokenizer.ggml.eot_token_id"))
    if eot and eot != info.eos_token:
        info.extra_eos_tokens.append(eot)
    facts = {"architecture": value("general.architecture") or "",
             "file_type": value("general.file_type"),
             "general_type": value("general.type") or "model"}
    return value("tokenizer.chat_template"), info, facts


def read_hf_chat_info(model_dir: Path | str) -> tuple[str | None, TokenizerInfo]:
    """(chat_template, TokenizerInfo) from a Hugging Face folder's tokenizer_config.json
    (or chat_template.jinja); the turn-end token from generation_config/config eos ids."""
    folder = Path(model_dir)
    cfg_path = folder / "tokenizer_config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    except json.JSONDecodeError as e:
        raise TailorError(f"{cfg_path} is not valid JSON (line {e.lineno}): {e.msg}") from e

    def tok(v) -> str:
        return v.get("content", "") if isinstance(v, dict) else (v or "")

    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    jinja_file = folder / "chat_template.jinja"
    if not template and jinja_file.exists():
        template = jinja_file.read_text(encoding="utf-8")
    info = TokenizerInfo(bos_token=tok(cfg.get("bos_token")), eos_token=tok(cfg.get("eos_token")),
                         add_bos_token=bool(cfg.get("add_bos_token", False)))
    for turn_end in _config_eos_tokens(folder):
        if turn_end not in (info.eos_token, *info.extra_eos_tokens):
            info.extra_eos_tokens.append(turn_end)
    return template, info


def _config_eos_tokens(folder: Path) -> list[str]:
    """The tokens behind config.json / generation_config.json ``eos_token_id`` (the turn-end
    token the model was trained to emit, e.g. <end_of_turn> where tokenizer eos is <eos>)."""
    ids: list[int] = []
    for name in ("generation_config.json", "config.json"):
        try:
            v = json.loads((folder / name).read_text(encoding="utf-8")).get("eos_token_id")
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for i in (v if isinstance(v, list) else [v]):
            if isinstance(i, int) and i not in ids:
                ids.append(i)
    if not ids:
        return []
    try:
        tok = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    by_id = {t["id"]: t["content"] for t in tok.get("added_tokens", [])}
    vocab = (tok.get("model") or {}).get("vocab") or {}
    if isinstance(vocab, dict):
        inverse = {v: k for k, v in vocab.items()}
    else:  # unigram: [[piece, score], ...]
        inverse = {i: p[0] for i, p in enumerate(vocab)}
    return [by_id.get(i) or inverse.get(i) for i in ids if (by_id.get(i) or inverse.get(i))]
