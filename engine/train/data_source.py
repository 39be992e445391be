"""The training set: engine.data's ``prepare_dataset`` (validation, masking, split, report).

Until the data package exposes ``prepare_dataset`` a minimal JSONL reader stands in (chat
``messages``, ``prompt``/``completion`` and ``text``), so training works end to end.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import sha256_file
from ..events import CancelToken, Reporter, TailorError, null_reporter


@dataclass
class _Example:
    tokens: list[int]
    loss_mask: list[int]
    source: str


@dataclass
class _Prepared:
    train: list
    valid: list
    sha256: str
    schema: str
    counts: dict = field(default_factory=dict)


def prepare(path: Path, tokenizer, data_config=None, *, report: Reporter = null_reporter,
            cancel: CancelToken | None = None):
    """(prepared dataset, counts dict) for ``path``; raises TailorError with file:line."""
    try:
        from ..data import DataConfig, prepare_dataset
    except ImportError:
        prepared = _fallback(Path(path), tokenizer, data_config)
        return prepared, prepared.counts
    cfg = data_config or DataConfig()
    prepared = prepare_dataset(Path(path), tokenizer, cfg, report=report, cancel=cancel)
    counts = {"train": len(prepared.train), "valid": len(prepared.valid)}
    try:
        counts.update({k: v for k, v in prepared.report.to_dict().items()
                       if isinstance(v, (int, float, str))})
    except Exception:  # the report is informative only
        pass
    return prepared, counts


def _fallback(path: Path, tokenizer, data_config) -> _Prepared:
    if not path.is_file():
        raise TailorError(f"dataset not found: {path}")
    max_len = getattr(data_config, "max_seq_length", 2048)
    seed = getattr(data_config, "split_seed", 0)
    frac = getattr(data_config, "valid_fraction", 0.1)
    examples, schema = [], ""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TailorError(f"{path}:{i}: invalid JSON ({e.msg})") from e
        if "messages" in obj:
            schema = "chat"
            msgs = obj["messages"]
            full = tokenizer.apply_chat_template(msgs, tokenize=False)
            prompt = tokenizer.apply_chat_template(msgs[:-1], tokenize=False,
                                                   add_generation_prompt=True)
        elif "prompt" in obj:
            schema = "prompt_completion"
            prompt, full = obj["prompt"], obj["prompt"] + obj["completion"]
        elif "text" in obj:
            schema, prompt, full = "text", "", obj["text"]
        else:
            raise TailorError(f"{path}:{i}: no messages, prompt/completion or text field")
        toks = list(tokenizer.encode(full, add_special_tokens=False))
        n_prompt = len(tokenizer.encode(prompt, add_special_tokens=False)) if prompt else 0
        toks = toks[:max_len]
        mask = [0] * min(n_prompt, len(toks)) + [1] * max(0, len(toks) - n_prompt)
        examples.append(_Example(toks, mask, f"{path.name}:{i}"))
    if len(examples) < 2:
        raise TailorError(f"{path}: needs at least 2 examples, found {len(examples)}")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, int(len(examples) * frac))
    valid = [examples[i] for i in order[:n_valid]]
    train = [examples[i] for i in order[n_valid:]]
    return _Prepared(train, valid, sha256_file(path), schema,
                     {"train": len(train), "valid": len(valid)})
