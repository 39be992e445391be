"""``prepare_dataset``: a user's file or folder -> validated, split, tokenized examples + report.

Order of work: read and validate every record (streamed) -> remove exact duplicates -> seeded
train/validation split (before any tokenizer-dependent step, so the split depends only on the
data and the seed) -> render with the chat template and tokenize in batches -> truncate or drop
over-long examples -> statistics, leakage and preview. The input is only ever opened for reading.
"""
from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import sha256_file
from ..configs import validate_ranges
from ..events import CancelToken, Log, Reporter, TailorError, null_reporter, stage_progress
from .config import DataConfig
from .readers import FORMATS, ProblemLog, ReadProgress, format_of, read_records
from .render import Rendered, Renderer
from .report import DataReport, TokenStats
from .schemas import BadExample, Example, detect_schema, json_type, normalize

SPLIT_STEMS = {"train": ("train",), "valid": ("valid", "validation", "val", "dev"),
               "test": ("test",)}
BATCH = 512  # examples per tokenizer call: big enough for the fast path, small for progress


@dataclass
class TokenizedExample:
    tokens: list[int]
    loss_mask: list[int]  # 1 where the token is a training target (predicted from the ones before)
    source: str  # "file:line"

    @property
    def trained_tokens(self) -> int:
        return sum(self.loss_mask)


@dataclass
class PreparedDataset:
    train: list[TokenizedExample]
    valid: list[TokenizedExample]
    report: DataReport
    sha256: str
    schema: str
    test: list[TokenizedExample] = field(default_factory=list)
    chat_template: str = ""  # the template the examples were rendered with ("" for text)


def dataset_files(path: Path) -> dict[str, Path]:
    """{"all": file} for a file; {"train": .., "valid": .., "test": ..} for a split folder."""
    if not path.exists():
        raise TailorError(f"{path}: no such file or folder")
    if not path.is_dir():
        if not path.is_file():
            raise TailorError(f"{path}: not a regular file")
        format_of(path)
        return {"all": path}
    found: dict[str, Path] = {}
    for split, stems in SPLIT_STEMS.items():
        for stem in stems:
            for ext in FORMATS:
                candidate = path / f"{stem}{ext}"
                if candidate.is_file() and split not in found:
                    found[split] = candidate
    if "train" not in found:
        raise TailorError(f"{path}: this folder has no train file (train.jsonl, train.json, "
                          "train.csv, ...)", hint="choose the dataset file itself, or name the "
                                                  "files train/valid/test")
    return found


def dataset_sha256(files: dict[str, Path]) -> str:
    if "all" in files:
        return sha256_file(files["all"])
    h = hashlib.sha256()
    for split in sorted(files):
        h.update(f"{split}\0{files[split].name}\0{sha256_file(files[split])}\n".encode())
    return h.hexdigest()


def _split_source(source: str) -> tuple[str, int]:
    name, _, line = source.rpartition(":")
    return name, int(line)


def read_examples(files: dict[str, Path], config: DataConfig, log: ProblemLog,
                  rep: DataReport, progress=None, cancel: CancelToken | None = None
                  ) -> dict[str, list[Example]]:
    """Stream every file into validated Examples of one schema (sets rep.schema, counts)."""
    out: dict[str, list[Example]] = {}
    schema_at = ""
    total = sum(f.stat().st_size for f in files.values()) or 1
    done_before = 0
    encodings, formats = [], []
    for split, f in files.items():
        name = f.name
        fmt = format_of(f)
        formats.append(fmt)
        size = f.stat().st_size
        if size == 0:
            raise TailorError(f"{name}: the file is empty", hint="add examples to it")
        meta: dict[str, Any] = {}
        tick = ReadProgress(total, (lambda pos, _t, b=done_before: progress(b + pos, total))
                        if progress else None, cancel)
        examples: list[Example] = []
        for rec in read_records(f, fmt, name, log, config.max_line_mib << 20, tick, meta):
            rep.records += 1
            schema = detect_schema(rec.value)
            if schema is None:
                if isinstance(rec.value, dict):
                    keys = ", ".join(repr(k) for k in list(rec.value)[:6]) or "none"
                    log.error(name, rec.line, f"no known fields (found {keys}; expected messages, "
                              "conversations, instruction/output, prompt/completion or text)")
                else:
                    log.error(name, rec.line, "expected a JSON object {...} per example, found "
                              f"{json_type(rec.value)}")
                continue
            if not rep.schema:
                rep.schema, schema_at = schema, f"{name}:{rec.line}"
            elif schema != rep.schema:
                raise TailorError(
                    f"{name}:{rec.line}: this example is in the {schema} format but the dataset "
                    f"is {rep.schema} (from {schema_at}); a dataset must use one format",
                    hint="split the file, or convert the differing lines")
            try:
                examples.append(normalize(rec.value, schema, f"{name}:{rec.line}"))
            except BadExample as e:
                log.error(name, rec.line, str(e))
        done_before += size
        rep.blank_lines += meta.get("blank_lines", 0)
        if meta.get("note"):
            rep.notes.append(f"{name}: {meta['note']}")
        encodings.append(meta.get("encoding", "utf-8"))
        out[split] = examples
    rep.encoding = ", ".join(sorted(set(encodings)))
    rep.format = formats[0] if "all" in files else "folder"
    rep.good = sum(len(v) for v in out.values())
    rep.skipped = sum(1 for p in log.problems if p.severity == "error")
    if rep.good == 0:
        first = next((p for p in log.problems if p.severity == "error"), None)
        where = next(iter(files.values())).name
        raise TailorError(f"{first}" if first else f"{where}: no examples found",
                          hint=(f"no usable examples: all {rep.records} were skipped"
                                if first else "the file holds no examples"))
    return out


def _dedupe(examples: list[Example]) -> tuple[list[Example], int]:
    seen: set[str] = set()
    kept = []
    for ex in examples:
        k = ex.key()
        if k not in seen:
            seen.add(k)
            kept.append(ex)
    return kept, len(examples) - len(kept)


def split_examples(examples: list[Example], fraction: float, seed: int, name: str = "dataset"
                   ) -> tuple[list[Example], list[Example]]:
    """Seeded split, file order kept inside each part; at least one validation example."""
    if fraction <= 0:
        return examples, []
    n = len(examples)
    if n < 2:
        raise TailorError(f"{name}: only {n} usable example: need at least 2 (one to train, one to "
                          "validate)", hint="add examples, or set the validation share to 0")
    n_valid = min(n - 1, max(1, round(n * fraction)))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    valid_idx = set(order[:n_valid])
    return ([ex for i, ex in enumerate(examples) if i not in valid_idx],
            [ex for i, ex in enumerate(examples) if i in valid_idx])


def prepare_dataset(path: Path | str, tokenizer: Any, config: DataConfig | None = None,
                    report: Reporter = null_reporter, cancel: CancelToken | None = None,
                    job: str = "data") -> PreparedDataset:
    """Read, validate, split, render and tokenize a dataset file or train/valid/test folder.

    ``tokenizer``: mlx-lm's TokenizerWrapper or a Hugging Face tokenizer (fast ones are
    batched). Bad examples are skipped and reported (``config.strict`` raises instead).
    Raises TailorError for whole-file problems (missing, empty, binary, mixed formats, too few
    examples) and Cancelled when ``cancel`` is set.
    """
    config = config or DataConfig()
    bad = validate_ranges(config)
    if bad:
        raise TailorError("invalid data settings: " + "; ".join(bad))
    path = Path(path)
    files = dataset_files(path)
    rep = DataReport(path=str(path), files=[str(f) for f in files.values()], strict=config.strict)
    log = ProblemLog(config.strict)
    read_bar = stage_progress(report, job, "read", 0.0, 0.4)
    tok_bar = stage_progress(report, job, "tokenize", 0.4, 1.0)
    rep.sha256 = dataset_sha256(files)

    by_split = read_examples(files, config, log, rep, read_bar, cancel)
    read_bar(1, 1, f"{rep.good} examples read")
    if rep.schema == "preference":  # pairs: both sides rendered and tokenized (preference.py)
        from .preference import finish_preference
        return finish_preference(path, files, by_split, tokenizer, config, rep, log, tok_bar,
                                 cancel)
    train_ex, valid_ex, test_ex = _split(by_split, files, config, rep, path.name)
    renderer = Renderer(tokenizer, config.chat_template, config.mask_prompt,
                        config.max_seq_length)
    parts, lengths = _tokenize_splits(renderer, {"train": train_ex, "valid": valid_ex,
                                                 "test": test_ex}, config, rep, log, tok_bar,
                                      cancel)
    if config.valid_fraction > 0 and not parts["valid"] and len(parts["train"]) >= 2 and \
            "valid" not in files:
        lengths = _hold_out_one(parts, lengths, config, rep)
    _count(rep, log, files, parts, lengths)
    if renderer.folded_system:
        rep.notes.append(f"{renderer.folded_system} system messages were merged into the first "
                         "user turn (the chat template has no system role)")
    if config.preview_count:
        first = sorted(train_ex + valid_ex, key=lambda e: _split_source(e.source)[1])
        rep.preview = _preview(renderer, first[:config.preview_count * 2], config.preview_count)
    for note in rep.notes:
        report(Log(job=job, message=note))
    _check_enough(path.name, parts, rep, config)
    return PreparedDataset(train=parts["train"], valid=parts["valid"], test=parts["test"],
                           report=rep, sha256=rep.sha256, schema=rep.schema,
                           chat_template=renderer.template_source if rep.schema != "text" else "")


def _split(by_split: dict, files: dict, config: DataConfig, rep: DataReport, name: str):
    """(train, valid, test) examples: one file split by the seeded validation share, or a
    folder's own files (valid split from train when missing); duplicates removed and the
    validation prompts also in training counted (rep.leakage)."""
    if "all" in by_split:
        examples = by_split["all"]
        if config.dedupe:
            examples, rep.duplicates = _dedupe(examples)
        train_ex, valid_ex = split_examples(examples, config.valid_fraction, config.split_seed,
                                            name)
        test_ex: list[Example] = []
    else:
        train_ex = by_split.get("train", [])
        valid_ex = by_split.get("valid", [])
        test_ex = by_split.get("test", [])
        if config.dedupe:
            train_ex, d1 = _dedupe(train_ex)
            valid_ex, d2 = _dedupe(valid_ex)
            test_ex, d3 = _dedupe(test_ex)
            rep.duplicates = d1 + d2 + d3
        if not valid_ex and config.valid_fraction > 0:
            train_ex, valid_ex = split_examples(train_ex, config.valid_fraction,
                                                config.split_seed, files["train"].name)
            rep.notes.append("no valid file: validation examples split from train")
    train_prompts = {ex.prompt_key() for ex in train_ex}
    rep.leakage = sum(1 for ex in valid_ex if ex.prompt_key() in train_prompts)
    return train_ex, valid_ex, test_ex


def _hold_out_one(parts: dict, lengths: dict, config: DataConfig, rep: DataReport) -> dict:
    """Every held-out example was skipped: hold out one good one instead (seeded); -> the
    new lengths."""
    moved = parts["train"].pop(random.Random(config.split_seed).randrange(len(parts["train"])))
    parts["valid"].append(moved)
    rep.notes.append(f"every validation example was skipped; {moved.source} was held out "
                     "instead")
    return {"train": ([len(e.tokens) for e in parts["train"]],
                      sum(e.trained_tokens for e in parts["train"])),
            "valid": ([len(moved.tokens)], moved.trained_tokens), "test": lengths["test"]}


def _count(rep: DataReport, log: ProblemLog, files: dict, parts: dict, lengths: dict) -> None:
    """The report's problems (in file order: rendering found some in split order), counts
    and token statistics."""
    rep.skipped = sum(1 for p in log.problems if p.severity == "error")
    file_order = {f.name: i for i, f in enumerate(files.values())}
    rep.problems = sorted(log.problems, key=lambda p: (file_order.get(p.file, -1), p.line))
    rep.train_examples, rep.valid_examples = len(parts["train"]), len(parts["valid"])
    rep.good = sum(len(v) for v in parts.values())
    rep.records = rep.good + rep.skipped + rep.duplicates + rep.dropped_too_long
    rep.test_examples = len(parts["test"])
    rep.train_stats = TokenStats.from_lengths(*lengths["train"])
    rep.valid_stats = TokenStats.from_lengths(*lengths["valid"])


def _check_enough(name: str, parts: dict, rep: DataReport, config: DataConfig) -> None:
    """TailorError when no training examples, fewer than one batch, or no validation
    examples are left, naming the counts."""
    if not parts["train"]:
        raise TailorError(f"{name}: no training examples left after skipping bad ones",
                          hint=str(rep.errors[0]) if rep.errors else "")
    n_train = len(parts["train"])
    if n_train < config.min_examples:
        where = [f"{rep.records} examples read", f"{len(parts['valid'])} held out for validation"]
        for count, what in ((rep.skipped, "skipped as bad"), (rep.duplicates, "duplicates"),
                            (rep.dropped_too_long, "dropped as too long")):
            if count:
                where.append(f"{count} {what}")
        raise TailorError(f"{name}: {n_train} training examples, fewer than one batch "
                          f"({config.min_examples}); " + ", ".join(where),
                          hint=f"add examples (at least {config.min_examples - n_train} more "
                               f"for training), or use a batch size of {n_train} or less")
    if config.valid_fraction > 0 and not parts["valid"]:
        raise TailorError(f"{name}: no validation examples left after skipping bad ones",
                          hint="add examples, or set the validation share to 0")


def _tokenize_splits(renderer: Renderer, splits: dict[str, list[Example]], config: DataConfig,
                     rep: DataReport, log: ProblemLog, bar, cancel: CancelToken | None):
    """Render and tokenize every split in batches. The Rust tokenizer (which releases the GIL)
    encodes batch k on a helper thread while this thread renders batch k + 1."""
    batches = [(split, exs[b:b + BATCH]) for split, exs in splits.items()
               for b in range(0, len(exs), BATCH)]
    total = sum(len(exs) for exs in splits.values())
    parts: dict[str, list[TokenizedExample]] = {split: [] for split in splits}
    trained: dict[str, int] = {split: 0 for split in splits}
    done = 0

    def finish(split: str, rendered: list[Rendered], encodings) -> None:
        nonlocal done
        for item, tok in zip(rendered, renderer.tokenize(rendered, encodings=encodings)):
            ex = _fit(item, tok.tokens, tok.loss_mask, config, rep, log)
            if ex is not None:
                parts[split].append(ex)
                trained[split] += sum(ex.loss_mask)
        done += len(rendered)
        bar(done, total, f"{done}/{total} examples tokenized")

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tailor-tokenize") as pool:
        pending = None
        for split, exs in batches:
            if cancel is not None:
                cancel.raise_if_cancelled()
            rendered = _render_batch(renderer, exs, log)
            future = pool.submit(renderer.encode, rendered)
            if pending is not None:
                finish(pending[0], pending[1], pending[2].result())
            pending = (split, rendered, future)
        if pending is not None:
            finish(pending[0], pending[1], pending[2].result())
    lengths = {split: ([len(e.tokens) for e in parts[split]], trained[split]) for split in splits}
    return parts, lengths


def _render_batch(renderer: Renderer, exs: list[Example], log: ProblemLog) -> list[Rendered]:
    out = []
    for ex in exs:
        try:
            out.append(renderer.render(ex))
        except BadExample as e:
            name, line = _split_source(ex.source)
            log.error(name, line, str(e))
    return out


def _fit(item: Rendered, tokens: list[int], mask: list[int], config: DataConfig,
         rep: DataReport, log: ProblemLog) -> TokenizedExample | None:
    """Apply the length limit; None when the example is dropped."""
    if not any(mask):
        name, line = _split_source(item.source)
        log.error(name, line, "no trained tokens after rendering")
        return None
    limit = config.max_seq_length
    if len(tokens) > limit:
        if config.too_long == "drop":
            rep.dropped_too_long += 1
            return None
        tokens, mask = tokens[:limit], mask[:limit]
        if not any(mask):  # everything trained was past the limit
            rep.dropped_too_long += 1
            return None
        rep.truncated += 1
    return TokenizedExample(tokens, mask, item.source)


def _preview(renderer: Renderer, exs: list[Example], count: int):
    out = []
    for ex in exs:
        if len(out) >= count:
            break
        try:
            item = renderer.render(ex)
        except BadExample:
            continue
        tok = renderer.tokenize([item], keep_offsets=True)[0]
        out.append(renderer.preview(item, tok))
    return out
