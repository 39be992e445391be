"""The examples an evaluation runs on: the run's own validation split, re-derived exactly as
training derived it, or a file (or train/valid/test folder) the importer reads.

The split is a pure function of the dataset's content, the data settings and the split seed
(engine/data/prepare.py), all in the run record; the dataset's sha256 is checked, so a file
edited since training (whose "validation" examples may then have been trained on) is refused
instead of silently evaluated.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..events import ErrorCode, Job, TailorError

MAX_LISTED = 20  # bad lines listed in the error (the rest counted)


@dataclass
class Split:
    items: list  # heldout.HeldOut
    record: dict  # the report's data record: path, sha256, split, schema
    chat_template: str  # the template the examples were rendered with ("" for the model's)


def eval_split(info, data: str | Path | None, tokenizer, job: Job) -> Split:
    """The evaluation examples of adapter ``info`` (``data`` None: its validation split)."""
    from ..data import DataConfig

    saved = dict(info.manifest.get("data_settings") or {})
    known = {f.name for f in dataclasses.fields(DataConfig)}
    settings = DataConfig(**{k: v for k, v in saved.items() if k in known})
    settings.preview_count = 0
    settings.min_examples = 1
    if data is None:
        return _run_split(info, settings, tokenizer, job)
    return _file_split(Path(data).expanduser(), settings, tokenizer, job)


def _run_split(info, settings, tokenizer, job: Job) -> Split:
    from ..data import prepare_dataset

    ds = info.manifest.get("dataset") or {}
    path = Path(ds.get("path") or "")
    if not ds.get("path") or not path.exists():
        raise TailorError(f"the dataset adapter {info.name!r} was trained on is missing: "
                          f"{ds.get('path') or '(not recorded)'}",
                          hint="put it back, or evaluate on a file with --data FILE",
                          code=ErrorCode.BAD_INPUT)
    prepared = prepare_dataset(path, tokenizer, settings, job=job.name)
    if ds.get("sha256") and prepared.sha256 != ds["sha256"]:
        raise TailorError(f"{path} changed since adapter {info.name!r} was trained on it, so "
                          "its validation split may now hold trained examples",
                          hint="evaluate on a file of held-out examples with --data FILE",
                          code=ErrorCode.BAD_INPUT)
    if not prepared.valid:
        raise TailorError(f"the run of {info.name!r} held out no validation examples",
                          hint="evaluate on a file of held-out examples with --data FILE")
    items = _held_out(prepared.valid, _examples_by_source(path, settings))
    return Split(items, {"path": str(path), "sha256": prepared.sha256, "split": "validation",
                         "schema": prepared.schema}, settings.chat_template)


def _file_split(path: Path, settings, tokenizer, job: Job) -> Split:
    """Every example of a file (a folder: its test file, else valid, else train); refused,
    listing the importer's file:line problems, when any line is bad."""
    from ..data import prepare_dataset

    settings.valid_fraction = 0.0  # all of it is held out: nothing to split off
    settings.strict = False  # list every bad line, not just the first
    prepared = prepare_dataset(path, tokenizer, settings, job=job.name)
    errors = [p for p in prepared.report.problems if p.severity == "error"]
    if errors:
        lines = [str(p) for p in errors[:MAX_LISTED]]
        more = f"\n... and {len(errors) - MAX_LISTED} more" if len(errors) > MAX_LISTED else ""
        raise TailorError(f"{path}: {len(errors)} bad examples; nothing was evaluated:\n"
                          + "\n".join(lines) + more,
                          hint=f"fix these lines (`tailor data check {path}` lists them all)",
                          code=ErrorCode.BAD_INPUT)
    part, name = next((p, n) for p, n in ((prepared.test, "test"), (prepared.valid, "valid"),
                                          (prepared.train, "all")) if p or n == "all")
    items = _held_out(part, _examples_by_source(path, settings))
    return Split(items, {"path": str(path), "sha256": prepared.sha256, "split": name,
                         "schema": prepared.schema}, settings.chat_template)


def _examples_by_source(path: Path, settings) -> dict[str, list]:
    """The dataset's Examples (their messages) by "file:line", in file order."""
    from ..data.prepare import dataset_files, read_examples
    from ..data.readers import ProblemLog
    from ..data.report import DataReport

    by_split = read_examples(dataset_files(path), settings, ProblemLog(False),
                             DataReport(path=str(path)))
    out: dict[str, list] = defaultdict(list)
    for examples in by_split.values():
        for ex in examples:
            out[ex.source].append(ex)
    return out


def _held_out(tokenized, examples: dict[str, list]) -> list:
    """HeldOut items: each tokenized example with its prompt and reference when its last
    turn is the assistant's (answer-style data)."""
    from .heldout import HeldOut

    taken: dict[str, int] = defaultdict(int)
    items = []
    for t in tokenized:
        same = examples.get(t.source) or []
        ex = same[min(taken[t.source], len(same) - 1)] if same else None
        taken[t.source] += 1
        item = HeldOut(t.source, list(t.tokens), list(t.loss_mask))
        msgs = getattr(ex, "messages", None)
        if msgs and len(msgs) >= 2 and msgs[-1].get("role") == "assistant":
            item.prompt = [dict(m) for m in msgs[:-1]]
            item.reference = str(msgs[-1].get("content") or "").strip()
        items.append(item)
    return items
