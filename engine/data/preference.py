"""The preference schema (Hugging Face TRL's conventions): ``prompt`` + ``chosen`` + ``rejected``,
each a string or a list of chat messages, with an optional ``system`` string.

A string prompt is one user turn; a string answer is one assistant turn. Message prompts end
with a user (or tool) turn; message answers end with an assistant turn. Each side is rendered
as prompt + answer through the model's chat template, and only the answer's span after the
prompt is trained (scored), so a multi-turn prompt's earlier assistant turns are context.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .report import PreviewExample
from .schemas import BadExample, Example, _text, parse_messages

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")


def is_preference(obj: dict) -> bool:
    """A record announces preference data by either answer field (TRL names)."""
    return "chosen" in obj or "rejected" in obj


@dataclass
class PreferenceExample(Example):
    """``messages`` is prompt + chosen (so duplicate and leakage checks see the prompt);
    ``prompt_turns`` how many of them are the prompt; ``rejected`` prompt + rejected."""

    prompt_turns: int = 0
    rejected: list[dict] = field(default_factory=list)

    def key(self) -> str:
        return json.dumps([self.messages, self.rejected], sort_keys=True, ensure_ascii=False)

    def prompt_key(self) -> str:
        return json.dumps([[m["role"], m["content"]] for m in self.messages[:self.prompt_turns]],
                          ensure_ascii=False)


def _messages(value: Any, name: str) -> list[dict]:
    # the chat schema's own checks; a preference side keeps role and content only
    return parse_messages(value, name, expected="a string or an array of messages",
                          tool_calls=False)


def _prompt(obj: dict) -> list[dict]:
    if "prompt" not in obj:
        raise BadExample("missing field 'prompt' (preference data needs prompt, chosen and "
                         "rejected)")
    raw = obj["prompt"]
    if isinstance(raw, str):
        turns = [{"role": "user", "content": _text(raw, "field 'prompt'")}]
    else:
        turns = _messages(raw, "prompt")
        if turns[-1]["role"] == "assistant":
            raise BadExample("the prompt's messages end with an assistant turn: the answer "
                             "belongs in chosen and rejected, and the prompt must end with a "
                             "user turn")
        if not any(m["role"] == "user" for m in turns):
            raise BadExample("the prompt's messages have no user turn")
    system = obj.get("system")
    if system is not None:
        system = _text(system, "field 'system'")
        if turns[0]["role"] == "system":
            raise BadExample("a system prompt is given twice: in field 'system' and as the "
                             "prompt's first message")
        turns.insert(0, {"role": "system", "content": system})
    return turns


def _answer(obj: dict, name: str) -> list[dict]:
    if name not in obj:
        raise BadExample(f"missing field {name!r} (preference data needs prompt, chosen and "
                         "rejected)")
    raw = obj[name]
    if isinstance(raw, str):
        return [{"role": "assistant", "content": _text(raw, f"field {name!r}")}]
    turns = _messages(raw, name)
    if turns[-1]["role"] != "assistant":
        raise BadExample(f"field {name!r} must end with an assistant turn (its last message "
                         f"is {turns[-1]['role']!r})")
    if turns[0]["role"] == "system":
        raise BadExample(f"field {name!r} starts with a system message: put it in the prompt "
                         "or in field 'system'")
    return turns


def normalize_preference(obj: dict, source: str) -> PreferenceExample:
    """The record as a PreferenceExample; raises BadExample naming the field."""
    prompt = _prompt(obj)
    chosen, rejected = _answer(obj, "chosen"), _answer(obj, "rejected")
    if [m["content"].strip() for m in chosen] == [m["content"].strip() for m in rejected]:
        raise BadExample("chosen and rejected are identical: the pair prefers nothing")
    return PreferenceExample(source, messages=prompt + chosen, prompt_turns=len(prompt),
                             rejected=prompt + rejected)


# ----------------------------------------------------------------------------------------------
# Rendering and tokenization of both sides


@dataclass
class PreferencePair:
    """One tokenized pair. ``tokens``/``loss_mask`` are the chosen side's (what a held-out
    prompt and its reference answer are read from)."""

    chosen: Any    # engine.data.prepare.TokenizedExample
    rejected: Any
    source: str

    @property
    def tokens(self) -> list[int]:
        return self.chosen.tokens

    @property
    def loss_mask(self) -> list[int]:
        return self.chosen.loss_mask

    @property
    def trained_tokens(self) -> int:
        return self.chosen.trained_tokens + self.rejected.trained_tokens


def render_side(renderer, ex: PreferenceExample, side: str):
    """(Rendered, prompt characters) of one side; only spans after the prompt are trained.
    Raises BadExample."""
    from .render import Rendered

    messages = ex.messages if side == "chosen" else ex.rejected
    item = renderer.render(Example(ex.source, messages=messages))
    prompt = messages[:ex.prompt_turns]
    cut = renderer._prefix_length(prompt, None, item.text)
    spans = [(max(s, cut), e) for s, e in item.spans if e > cut]
    if not spans:
        raise BadExample(f"the {side} answer has no trained text after rendering")
    return Rendered(item.source, item.text, spans), cut


def tokenize_pairs(renderer, examples: list[PreferenceExample], limit: int, too_long: str,
                   log, rep) -> list[PreferencePair]:
    """Both sides of every example rendered and tokenized; problems logged at file:line."""
    from .prepare import TokenizedExample, _split_source

    out = []
    for ex in examples:
        name, line = _split_source(ex.source)
        try:
            sides = {}
            for side in ("chosen", "rejected"):
                item, _ = render_side(renderer, ex, side)
                tok = renderer.tokenize([item])[0]
                sides[side] = _fit_side(tok.tokens, tok.loss_mask, limit, too_long, side, rep)
        except BadExample as e:
            log.error(name, line, str(e))
            continue
        out.append(PreferencePair(TokenizedExample(*sides["chosen"], ex.source),
                                  TokenizedExample(*sides["rejected"], ex.source), ex.source))
    return out


def _fit_side(tokens: list[int], mask: list[int], limit: int, too_long: str, side: str, rep
              ) -> tuple[list[int], list[int]]:
    if not any(mask):
        raise BadExample(f"the {side} answer has no trained tokens after rendering")
    if len(tokens) <= limit:
        return tokens, mask
    first = mask.index(1)
    if first >= limit - 1:
        raise BadExample(f"the prompt is {first} tokens after the chat template, the "
                         f"maximum sequence length is {limit}: no room for the {side} answer")
    if too_long == "drop":
        raise BadExample(f"the {side} side is {len(tokens)} tokens after the chat template, "
                         f"over the maximum sequence length {limit} (--too-long drop)")
    rep.truncated += 1
    return tokens[:limit], mask[:limit]


def preview_pairs(renderer, examples: list[PreferenceExample], count: int
                  ) -> list[PreviewExample]:
    """Each previewed pair as two examples, '(chosen)' and '(rejected)', trained spans marked."""
    out: list[PreviewExample] = []
    for ex in examples[:count]:
        for side in ("chosen", "rejected"):
            try:
                item, _ = render_side(renderer, ex, side)
            except BadExample:
                break
            tok = renderer.tokenize([item], keep_offsets=True)[0]
            p = renderer.preview(item, tok)
            out.append(PreviewExample(f"{ex.source} ({side})", p.segments))
    return out


def finish_preference(path, files: dict, by_split: dict, tokenizer, config, rep, log, tok_bar,
                      cancel):
    """prepare_dataset's tail for preference data: split, render and tokenize both sides,
    count and preview; -> PreparedDataset whose splits hold PreferencePairs."""
    from .prepare import PreparedDataset, _check_enough, _split
    from .render import Renderer
    from .report import TokenStats

    train_ex, valid_ex, test_ex = _split(by_split, files, config, rep, path.name)
    renderer = Renderer(tokenizer, config.chat_template, True, config.max_seq_length)
    parts = {}
    for split, exs in (("train", train_ex), ("valid", valid_ex), ("test", test_ex)):
        if cancel is not None:
            cancel.raise_if_cancelled()
        parts[split] = tokenize_pairs(renderer, exs, config.max_seq_length, config.too_long,
                                      log, rep)
        tok_bar(1 + len(parts), 4, f"{split}: {len(parts[split])} pairs tokenized")
    if config.valid_fraction > 0 and not parts["valid"] and len(parts["train"]) >= 2 and \
            "valid" not in files:  # every held-out pair was bad: hold out a good one (seeded)
        import random

        moved = parts["train"].pop(random.Random(config.split_seed).randrange(
            len(parts["train"])))
        parts["valid"].append(moved)
        rep.notes.append(f"every validation pair was skipped; {moved.source} was held out "
                         "instead")
    file_order = {f.name: i for i, f in enumerate(files.values())}
    rep.skipped = sum(1 for p in log.problems if p.severity == "error")
    rep.problems = sorted(log.problems, key=lambda p: (file_order.get(p.file, -1), p.line))
    rep.train_examples, rep.valid_examples = len(parts["train"]), len(parts["valid"])
    rep.test_examples = len(parts["test"])
    rep.good = sum(len(v) for v in parts.values())
    rep.records = rep.good + rep.skipped + rep.duplicates
    for split, stats in (("train", "train_stats"), ("valid", "valid_stats")):
        lengths = [len(p.chosen.tokens) + len(p.rejected.tokens) for p in parts[split]]
        setattr(rep, stats, TokenStats.from_lengths(
            lengths, sum(p.trained_tokens for p in parts[split])))
    if config.preview_count:
        rep.preview = preview_pairs(renderer, train_ex + valid_ex, config.preview_count)
    _check_enough(path.name, parts, rep, config)
    return PreparedDataset(train=parts["train"], valid=parts["valid"], test=parts["test"],
                           report=rep, sha256=rep.sha256, schema="preference",
                           chat_template=renderer.template_source)
