"""Chat-template rendering (the bounded sandbox of chat_template.py, as transformers renders) and
batched tokenization with a loss mask: 1 on each assistant turn's content and its end-of-turn
token, 0 elsewhere.

How the mask is found: the conversation is rendered once; for assistant turn i, the template
renders ``messages[:i]`` with the generation prompt, which is (a prefix of) the text before
that turn. The trained characters run from the turn's content to the end of the first
end-of-turn token after it (``<|im_end|>``, ``<end_of_turn>``, ``</s>``, ``<|eot_id|>``,
``<|end|>``...). One fast-tokenizer batch call then maps characters to tokens (offsets).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2.exceptions import SecurityError

from ..events import TailorError
from .chat_template import (ChatTemplate, TemplateLimitError, TemplateRaised,
                            compile_chat_template, template_origin)
from .report import PreviewExample
from .schemas import BadExample, Example

# Special tokens that can close a turn (matched by name; "header"/"start" ones never do).
_END_NAME = re.compile(r"end|eot|eos|</s>", re.I)
_NOT_END = re.compile(r"header|start|begin", re.I)


def unwrap_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer inside mlx-lm's TokenizerWrapper (or the tokenizer itself)."""
    inner = getattr(tokenizer, "_tokenizer", None)
    # A transformers fast tokenizer also has `_tokenizer` (its Rust backend): keep it whole.
    return inner if inner is not None and hasattr(inner, "eos_token_id") else tokenizer


@dataclass
class Rendered:
    source: str
    text: str
    spans: list[tuple[int, int]]  # trained character spans
    add_special_tokens: bool = False  # plain text: let the tokenizer add BOS
    append_eos: bool = False


@dataclass
class Tokenized:
    tokens: list[int]
    loss_mask: list[int]
    offsets: list[tuple[int, int]] | None = None


class Renderer:
    """Renders Examples with one tokenizer's chat template and tokenizes them in batches."""

    def __init__(self, tokenizer: Any, chat_template: str = "", mask_prompt: bool = True,
                 max_tokens: int | None = None):
        self.tok = unwrap_tokenizer(tokenizer)
        self.mask_prompt = mask_prompt
        self.max_tokens = max_tokens  # longest example in tokens: widens the output cap
        source = chat_template
        self.template_origin = "the --chat-template text"
        if source and "{" not in source:  # no Jinja in it: a file name
            file = Path(source).expanduser()
            if not file.is_file():
                raise TailorError(f"{source}: chat template file not found")
            try:
                source = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise TailorError(f"{source}: cannot read the chat template ({e})") from None
            self.template_origin = str(file)
        if not source:
            source = self._model_template()
            self.template_origin = template_origin(self.tok)
        self.template_source = source
        self._template: ChatTemplate | None = None
        self.special = {name: self._token_str(name) for name in
                        ("bos_token", "eos_token", "unk_token", "pad_token")}
        self.eos_id = self.tok.eos_token_id
        self.end_tokens = self._end_tokens()
        self.fast = bool(getattr(self.tok, "is_fast", False))
        self.folded_system = 0  # conversations whose system turn was merged into the first user

    @property
    def template(self) -> ChatTemplate | None:
        """Compiled on first use, so a text dataset never depends on the template."""
        if self._template is None and self.template_source:
            self._template = compile_chat_template(self.template_source, self.template_origin)
        return self._template

    def _model_template(self) -> str:
        t = getattr(self.tok, "chat_template", None)
        if isinstance(t, dict):
            t = t.get("default") or next(iter(t.values()), None)
        return t or ""

    def _token_str(self, name: str) -> str:
        value = getattr(self.tok, name, None)
        return value if isinstance(value, str) else ""

    def _end_tokens(self) -> list[str]:
        names = [self.special["eos_token"]] + list(getattr(self.tok, "all_special_tokens", []))
        decoder = getattr(self.tok, "added_tokens_decoder", {}) or {}
        names += [getattr(t, "content", str(t)) for t in decoder.values()]
        ends = []
        for n in names:
            if n and n not in ends and _END_NAME.search(n) and not _NOT_END.search(n):
                ends.append(n)
        return ends

    # ------------------------------------------------------------------------------------------
    # Rendering

    def render_messages(self, messages: list[dict], tools: list | None = None,
                        add_generation_prompt: bool = False) -> str:
        if self.template is None:
            raise TailorError("the model has no chat template, so chat data cannot be rendered",
                              hint="use a text dataset, or give a template with "
                                   "--chat-template FILE")
        context = dict(self.special, messages=messages, tools=tools,
                       add_generation_prompt=add_generation_prompt)
        try:
            return self.template.render(context, self.max_tokens)
        except TemplateLimitError:
            raise  # the template itself is at fault, on every example: stop, naming it
        except Exception as e:  # noqa: BLE001 - third-party template code run on user data
            raise BadExample(f"the model's chat template refused this conversation: "
                             f"{type(e).__name__ if not str(e) else e}") from None

    def render_prompt(self, messages: list[dict]) -> str:
        """The prompt text for generation (``add_generation_prompt``); a system turn the
        template refuses is merged into the first user turn, as in training. Raises
        TailorError naming the template for any template failure."""
        if self.template is None:
            raise TailorError("the model has no chat template", hint="use --raw")
        context = dict(self.special, messages=messages, tools=None, add_generation_prompt=True)
        try:
            try:
                return self.template.render(context, self.max_tokens)
            except TemplateRaised:
                if len(messages) < 2 or messages[0]["role"] != "system":
                    raise
                merged = dict(messages[1], content=messages[0]["content"].strip() + "\n\n"
                              + messages[1]["content"])
                return self.template.render(dict(context, messages=[merged] + messages[2:]),
                                            self.max_tokens)
        except TemplateLimitError:
            raise
        except SecurityError as e:
            raise TailorError(f"{self.template_origin}: the chat template broke the sandbox's "
                              f"rules: {e}",
                              hint="the template tries to reach Python internals: it is broken "
                                   "or hostile; fix it, or send the prompt as it is with "
                                   "--raw") from None
        except Exception as e:  # noqa: BLE001 - third-party template code
            raise TailorError(f"{self.template_origin}: the chat template failed on this "
                              f"prompt: {type(e).__name__ if not str(e) else e}",
                              hint="fix the template, or send the prompt as it is with --raw"
                              ) from None

    def render(self, ex: Example) -> Rendered:
        """Text and trained spans of one example; raises BadExample."""
        if ex.text is not None:
            return Rendered(ex.source, ex.text, [(0, len(ex.text))], add_special_tokens=True,
                            append_eos=True)
        messages = ex.messages
        try:
            full = self.render_messages(messages, ex.tools)
        except BadExample:
            # Templates without a system role (Gemma) refuse it; fold it into the first user turn.
            if len(messages) > 1 and messages[0]["role"] == "system" and \
                    messages[1]["role"] == "user":
                merged = dict(messages[1], content=messages[0]["content"].strip() + "\n\n"
                              + messages[1]["content"])
                messages = [merged] + messages[2:]
                full = self.render_messages(messages, ex.tools)
                self.folded_system += 1
            else:
                raise
        if not self.mask_prompt:
            return Rendered(ex.source, full, [(0, len(full))])
        spans: list[tuple[int, int]] = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            floor = spans[-1][1] if spans else 0
            start = max(self._prefix_length(messages[:i], ex.tools, full), floor)
            content = m["content"].strip()
            found = full.find(content, start) if content else -1
            if found >= 0:
                # Whitespace the template puts between the prompt and the content (Llama 2's
                # ' ' after [/INST]) is generated by the model too, so it is trained.
                content_end = found + len(content)
                if full[start:found].strip():
                    start = found
            else:  # content rewritten by the template (or a tool call): train the whole turn
                content_end = start
            end = self._end_of_turn(full, content_end)
            if end is not None and i + 1 < len(messages):
                # An end token found only past the next turn's content is not this turn's.
                following = messages[i + 1]["content"].strip()
                at = full.find(following, content_end) if following else -1
                if 0 <= at < end - 1:
                    end = None
            if end is None:
                end = self._turn_end_without_token(messages[:i + 1], ex.tools, full, content_end)
            if end > start:
                spans.append((start, end))
        if not spans:
            raise BadExample("no assistant text found in the rendered conversation (the chat "
                             "template drops assistant turns?)")
        return Rendered(ex.source, full, spans)

    def _prefix_length(self, messages: list[dict], tools, full: str) -> int:
        if not messages:
            return 0
        try:
            prefix = self.render_messages(messages, tools, add_generation_prompt=True)
        except BadExample:
            return 0
        if full.startswith(prefix):
            return len(prefix)
        n = 0
        for a, b in zip(prefix, full):
            if a != b:
                break
            n += 1
        return n

    def _end_of_turn(self, full: str, pos: int) -> int | None:
        best = None
        for tok in self.end_tokens:
            at = full.find(tok, pos)
            if at >= 0 and (best is None or at + len(tok) < best):
                best = at + len(tok)
        return best

    def _turn_end_without_token(self, upto: list[dict], tools, full: str, content_end: int
                                ) -> int:
        try:
            text = self.render_messages(upto, tools)
        except BadExample:
            return content_end
        n = 0
        for a, b in zip(text, full):
            if a != b:
                break
            n += 1
        return max(content_end, len(full[:n].rstrip()))

    # ------------------------------------------------------------------------------------------
    # Tokenization

    def encode(self, items: list[Rendered]) -> list[Any] | None:
        """Fast-tokenizer encodings (with character offsets) of a batch, in order; None for a
        slow tokenizer. Runs in Rust without the GIL, so it can overlap rendering."""
        if not self.fast:
            return None
        out: list[Any] = [None] * len(items)
        backend = getattr(self.tok, "_tokenizer", None)
        # Straight to the Rust tokenizer when no padding/truncation is set on it (what
        # transformers' __call__ would do, minus its per-item conversion).
        direct = (backend is not None and hasattr(backend, "encode_batch") and
                  getattr(backend, "padding", None) is None and
                  getattr(backend, "truncation", None) is None)
        for special in (False, True):
            idx = [i for i, r in enumerate(items) if r.add_special_tokens == special]
            if not idx:
                continue
            texts = [items[i].text for i in idx]
            if direct:
                encodings = backend.encode_batch(texts, add_special_tokens=special)
            else:
                encodings = self.tok(texts, add_special_tokens=special,
                                     return_attention_mask=False,
                                     return_token_type_ids=False).encodings
            for j, i in enumerate(idx):
                out[i] = encodings[j]
        return out

    def tokenize(self, items: list[Rendered], keep_offsets: bool = False,
                 encodings: list[Any] | None = None) -> list[Tokenized]:
        """Token ids and loss masks of a batch (``encodings`` from ``encode`` if done already)."""
        if encodings is None:
            encodings = self.encode(items)
        if encodings is None:
            return [self._masked_slow(item) for item in items]
        return [self._masked_fast(item, enc, keep_offsets)
                for item, enc in zip(items, encodings)]

    def _masked_fast(self, item: Rendered, encoding, keep_offsets: bool) -> Tokenized:
        ids = encoding.ids  # a fresh list on every access
        n = len(ids)
        if item.spans == [(0, len(item.text))]:  # text, or masking off: every token (BOS too)
            mask = [1] * n
            item_spans: list[tuple[int, int]] = []
        else:
            mask = [0] * n
            item_spans = item.spans
        for s, e in item_spans:
            t0 = t1 = None
            for c in range(s, e):
                t0 = encoding.char_to_token(c)
                if t0 is not None:
                    break
            for c in range(e - 1, s - 1, -1):
                t1 = encoding.char_to_token(c)
                if t1 is not None:
                    break
            if t0 is not None and t1 is not None and t1 >= t0:
                # A byte-level BPE character may span several tokens: take them all.
                while t1 + 1 < n:
                    nxt = encoding.token_to_chars(t1 + 1)
                    if nxt is None or nxt[0] >= e or nxt[1] <= nxt[0]:
                        break
                    t1 += 1
                mask[t0:t1 + 1] = [1] * (t1 + 1 - t0)
        offsets = list(encoding.offsets) if keep_offsets else None
        if item.append_eos and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            mask.append(1)
            if offsets is not None:
                offsets.append((len(item.text), len(item.text)))
        return Tokenized(ids, mask, offsets)

    def _masked_slow(self, item: Rendered) -> Tokenized:
        # No offsets: count tokens of growing prefixes (slower; only for slow tokenizers).
        def count(text: str) -> int:
            return len(self.tok.encode(text, add_special_tokens=item.add_special_tokens))

        ids = self.tok.encode(item.text, add_special_tokens=item.add_special_tokens)
        mask = [0] * len(ids)
        for s, e in item.spans:
            t0, t1 = count(item.text[:s]), count(item.text[:e])
            mask[t0:t1] = [1] * (min(t1, len(ids)) - min(t0, len(ids)))
        if item.append_eos and self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
            mask.append(1)
        return Tokenized(ids, mask)

    def preview(self, item: Rendered, tokenized: Tokenized) -> PreviewExample:
        """Rendered text cut into (text, trained) segments along token boundaries."""
        text = item.text
        trained = [False] * len(text)
        if tokenized.offsets is not None:
            for (s, e), m in zip(tokenized.offsets, tokenized.loss_mask):
                if m:
                    trained[s:e] = [True] * (e - s)
        else:
            for s, e in item.spans:
                trained[s:e] = [True] * (e - s)
        segments: list[tuple[str, bool]] = []
        start = 0
        for i in range(1, len(text) + 1):
            if i == len(text) or trained[i] != trained[start]:
                segments.append((text[start:i], trained[start]))
                start = i
        if item.append_eos and tokenized.loss_mask and tokenized.tokens[-1] == self.eos_id and \
                not text.endswith(self.special["eos_token"] or "\0"):
            segments.append((self.special["eos_token"], True))
        return PreviewExample(item.source, segments)
