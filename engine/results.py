"""Every command's result, as the dataclass that crosses the process boundary.

A command's domain function returns one of these; the command runner sends it in its
``Finished`` event (engine/events.py); ``decode_event`` rebuilds the same class in the app,
which reads typed fields. Stdlib only and importing no other engine module (the app and
events.py import this one); each class is registered by its ``tag``, so adding a command's
result is one class here.
"""
from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar


def _finite(value: Any) -> Any:
    """JSON has no NaN/Infinity; send them as strings so a reader never chokes on a line."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


_RESULTS: dict[str, type["Result"]] = {}


@dataclass
class Result:
    """A command's typed result. Subclasses set ``tag`` and are registered by it, so a
    ``Finished`` event decodes back into the same class (nested Results and lists of them
    included). Field types must be JSON-able: str, numbers, bool, None, lists, dicts, Results.
    """

    tag: ClassVar[str] = "result"  # (not "kind": ExportResult has a field of that name)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "tag" in cls.__dict__:
            _RESULTS[cls.tag] = cls

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.tag, **_finite(_plain(asdict(self)))}

    @classmethod
    def from_dict(cls, data: dict) -> "Result":
        """``cls`` from its wire form; unknown keys are ignored, missing ones take defaults."""
        hints = typing.get_type_hints(cls)
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = _decode_value(hints.get(f.name), data[f.name])
        return cls(**values)

    @classmethod
    def coerce(cls, value: "Result | dict | None") -> "Result":
        """``value`` as ``cls``: itself, or built from a plain dict (a version-1 worker's
        result, a record read from disk); None gives the defaults."""
        if isinstance(value, cls):
            return value
        if isinstance(value, Result):
            value = value.to_dict()
        return cls.from_dict(dict(value or {}))


def _plain(value: Any) -> Any:
    """Paths and other objects as str, so a Result's dict is what goes on the wire."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _decode_value(tp: Any, value: Any) -> Any:
    """A wire value as the field's declared type: a nested Result, a list of them, else as is."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    if isinstance(tp, type) and issubclass(tp, Result) and isinstance(value, dict):
        return tp.from_dict(value)
    if typing.get_origin(tp) is list and isinstance(value, list):
        (item,) = typing.get_args(tp) or (Any,)
        return [_decode_value(item, v) for v in value]
    return value


def result_class(tag: str) -> type["Result"] | None:
    """The Result class registered for ``tag``."""
    return _RESULTS.get(tag)


def decode_result(data: Any) -> "Result | dict":
    """A Finished event's ``result`` from the wire: its Result class when tagged with a
    registered ``type``; a dict otherwise (version 1, or a type this build does not know)."""
    if isinstance(data, dict) and isinstance(data.get("type"), str):
        cls = _RESULTS.get(data["type"])
        if cls is not None:
            return cls.from_dict(data)
    return data if isinstance(data, dict) else {}


@dataclass
class Check(Result):
    """One verification check. ``passed`` None: a known difference, recorded, not a failure."""

    tag: ClassVar[str] = "check"
    name: str = ""
    passed: bool | None = None
    detail: str = ""


class JobState(StrEnum):
    """The one vocabulary for where a job is: the worker and the queue (queued, running,
    stopping, then an end), and an adapter's run in the library (its manifest's status; a
    "running" one whose process is gone reads as interrupted)."""

    IDLE = "idle"
    QUEUED = "queued"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"          # the worker died without a final event
    INTERRUPTED = "interrupted"  # a library run whose process ended without recording it


# The ends a job can reach, and the statuses a run's manifest records.
FINAL_STATES = (JobState.FINISHED, JobState.FAILED, JobState.CANCELLED, JobState.CRASHED)
RUN_STATUSES = (JobState.RUNNING, JobState.FINISHED, JobState.CANCELLED, JobState.FAILED)


# ----------------------------------------------------------------------------------------------
# The commands' results



__all__ = ["AdapterRecord", "Check", "DataReport", "DemoResult", "ExportResult", "FuseResult",
           "GenerateResult", "HandoffResult", "LibraryChange", "LibraryList", "ModelDownload",
           "ModelInfo", "OllamaStatus", "PreviewExample", "Problem", "TokenStats", "TrainResult"]


@dataclass
class TrainResult(Result):
    """A training run (or resume) that ended: the adapter in the library and its losses."""

    tag: ClassVar[str] = "train"
    adapter: str = ""
    path: str = ""
    steps: int = 0
    best_val_loss: float | None = None
    final_train_loss: float | None = None
    stopped_early: bool = False


@dataclass
class FuseResult(Result):
    """`tailor fuse`: the Hugging Face folder with the adapter merged into its base."""

    tag: ClassVar[str] = "fuse"
    path: str = ""


@dataclass
class GenerateResult(Result):
    """`tailor generate`: the reply."""

    tag: ClassVar[str] = "generate"
    text: str = ""


@dataclass
class ModelDownload(Result):
    """`tailor model download`: the checked local folder of the repository."""

    tag: ClassVar[str] = "model.download"
    path: str = ""


@dataclass
class ExportResult(Result):
    """What `tailor export` wrote: also the record beside the GGUF (``<file>.gguf.json``)."""

    tag: ClassVar[str] = "export"
    path: Path = Path()
    quant: str = ""
    size_bytes: int = 0
    verification: dict = field(default_factory=dict)  # verify.py's record: passed, checks...
    source: str = ""
    kind: str = "model"  # "model" | "adapter"
    seconds: float = 0.0
    tensors: list[dict] = field(default_factory=list)  # (the Finished event sends only the count)
    metadata: dict = field(default_factory=dict)
    tensor_count: int = 0

    def __post_init__(self) -> None:
        self.path = Path(self.path)  # (a str from the wire)

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"schema": "tailor.export/1"}

    @property
    def adapter_only(self) -> bool:
        """A GGUF LoRA adapter (needs its base), not a whole model."""
        return self.kind == "adapter"

    @property
    def verified(self) -> bool:
        """Every verification check passed (False also when nothing was verified)."""
        return bool(self.verification.get("passed"))

    @property
    def checks(self) -> list[Check]:
        """The verification's checks, typed."""
        return [Check.coerce(c) for c in self.verification.get("checks") or []]


@dataclass
class HandoffResult(Result):
    """What the hand-off did: ``created`` in Ollama (confirmed), or only ``modelfile_dir``
    written (Ollama offline or --offline) with the ``command`` that creates it."""

    tag: ClassVar[str] = "ollama.handoff"
    model: str = ""
    created: bool = False  # True only after /api/show confirmed the model
    host: str = ""
    digest: str = ""
    uploaded: bool = False
    gguf: str = ""
    template: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    quantize: str | None = None
    modelfile_dir: str = ""
    command: str = ""
    statuses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class OllamaStatus(Result):
    """`tailor ollama status`: whether a server answered at ``host``, and what it holds."""

    tag: ClassVar[str] = "ollama.status"
    host: str = ""
    reachable: bool = False
    version: str = ""
    models: list[str] = field(default_factory=list)
    error: str = ""
    hint: str = ""



@dataclass
class DemoResult(Result):
    """The demo's run: the adapter, the try-it answers, the verified GGUF, its Modelfile folder."""

    tag: ClassVar[str] = "demo"
    model: str = ""
    dataset: str = ""
    adapter: str = ""
    adapter_path: str = ""
    first_val_loss: float | None = None
    best_val_loss: float | None = None
    # one per try-it prompt: prompt, reference (the dataset's answer, or None), where ("train",
    # "valid" or None: the split it was in), base, adapter, base_matches, adapter_matches
    tries: list[dict] = field(default_factory=list)
    base_matches: int = 0
    adapter_matches: int = 0
    gguf: str = ""
    gguf_bytes: int = 0
    verification: dict = field(default_factory=dict)
    modelfile_dir: str = ""
    command: str = ""
    seconds: float = 0.0


@dataclass
class LibraryList(Result):
    """`tailor library list`: one summary row per adapter (name, status, method, steps...)."""

    tag: ClassVar[str] = "library.list"
    adapters: list[dict] = field(default_factory=list)


@dataclass
class AdapterRecord(Result):
    """`tailor library show`: the adapter's manifest."""

    tag: ClassVar[str] = "library.show"
    manifest: dict = field(default_factory=dict)


@dataclass
class LibraryChange(Result):
    """`tailor library rename|duplicate|delete`: the adapter as it now is (``deleted``: the
    name removed)."""

    tag: ClassVar[str] = "library.change"
    name: str = ""
    path: str = ""
    deleted: str = ""


@dataclass
class ModelInfo(Result):
    """`tailor model info`: what a user wants to know before training on a model folder."""

    tag: ClassVar[str] = "model.info"
    path: str = ""
    architecture: str = ""
    architectures: list[str] = field(default_factory=list)
    parameters: int = 0
    layers: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    quantization: dict | None = None  # bits, group_size
    weight_bytes: int = 0
    memory_to_load_gb: float = 0.0
    chat_template: bool = False
    gguf_export: bool = False
    gguf_export_reason: str = ""  # why not, in one sentence (engine/capabilities.py); "" exports
    gguf_supported_architectures: list[str] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# The data check's report (engine/data/report.py re-exports it)


# The plain-text preview marks trained text like this (the app highlights segments instead).
TRAIN_OPEN, TRAIN_CLOSE = "⟦", "⟧"


@dataclass
class Problem(Result):
    """One problem the data check found, at ``file:line[:column]``."""

    tag: ClassVar[str] = "data.problem"
    file: str = ""
    line: int = 0  # 1-based; 0 when the problem concerns the whole file
    message: str = ""
    column: int | None = None
    severity: str = "error"  # "error" (example skipped) or "warning" (noted, nothing lost)

    @property
    def location(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        return f"{loc}:{self.column}" if self.column else loc

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class PreviewExample(Result):
    """One rendered example, its trained spans marked."""

    tag: ClassVar[str] = "data.preview"
    source: str = ""
    # (text, trained) in order; joined they are the rendering
    segments: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def marked_text(self) -> str:
        return "".join(f"{TRAIN_OPEN}{t}{TRAIN_CLOSE}" if trained else t
                       for t, trained in self.segments)


@dataclass
class TokenStats(Result):
    """Token counts and the example-length distribution of one split."""

    tag: ClassVar[str] = "data.token_stats"
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    length_min: int = 0
    length_median: float = 0.0
    length_p95: float = 0.0
    length_max: int = 0
    # Histogram of example lengths in tokens: counts[i] examples in [edges[i], edges[i+1]).
    histogram_edges: list[int] = field(default_factory=list)
    histogram_counts: list[int] = field(default_factory=list)

    @classmethod
    def from_lengths(cls, lengths: list[int], trained: int, bins: int = 20) -> "TokenStats":
        if not lengths:
            return cls()
        s = sorted(lengths)
        n = len(s)

        def quantile(q: float) -> float:
            # Linear interpolation between closest ranks (numpy's default).
            pos = q * (n - 1)
            lo = math.floor(pos)
            hi = min(lo + 1, n - 1)
            return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))

        lo, hi = s[0], s[-1]
        width = max(1, math.ceil((hi - lo + 1) / bins))
        edges = [lo + i * width for i in range(bins + 1)]
        counts = [0] * bins
        for v in s:
            counts[min((v - lo) // width, bins - 1)] += 1
        while len(counts) > 1 and counts[-1] == 0:  # no empty tail bins
            counts.pop()
            edges.pop()
        return cls(examples=n, tokens=sum(s), trained_tokens=trained, length_min=lo,
                   length_median=quantile(0.5), length_p95=quantile(0.95), length_max=hi,
                   histogram_edges=edges, histogram_counts=counts)


@dataclass
class DataReport(Result):
    """`tailor data check`: what the import found (also part of a training run's record)."""

    tag: ClassVar[str] = "data.check"
    path: str = ""
    files: list[str] = field(default_factory=list)
    format: str = ""  # jsonl | json | csv | tsv | text | folder
    schema: str = ""  # chat | sharegpt | alpaca | completion | text
    encoding: str = ""
    sha256: str = ""
    strict: bool = False
    records: int = 0  # examples read (good + skipped)
    good: int = 0
    skipped: int = 0
    blank_lines: int = 0
    duplicates: int = 0
    leakage: int = 0  # validation examples whose prompt also appears in training
    truncated: int = 0
    dropped_too_long: int = 0
    train_examples: int = 0
    valid_examples: int = 0
    test_examples: int = 0
    problems: list[Problem] = field(default_factory=list)
    train_stats: TokenStats = field(default_factory=TokenStats)
    valid_stats: TokenStats = field(default_factory=TokenStats)
    preview: list[PreviewExample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict:
        # the computed fields too, for readers of the JSON (tailor data check --json)
        d = super().to_dict()
        d["problems"] = [{**asdict(p), "location": p.location, "text": str(p)}
                         for p in self.problems]
        d["preview"] = [{"source": p.source, "segments": [list(s) for s in p.segments],
                         "marked_text": p.marked_text} for p in self.preview]
        d["errors"] = len(self.errors)
        d["warnings"] = len(self.warnings)
        return d

    def format_text(self, max_problems: int = 50) -> str:
        name = Path(self.path).name or self.path
        out = [f"Dataset {name}: {self.format}, schema {self.schema or '?'}, "
               f"encoding {self.encoding or '?'}",
               f"  sha256 {self.sha256}",
               f"  {self.records} examples read: {self.good} good, {self.skipped} skipped"
               + (f", {self.blank_lines} blank lines" if self.blank_lines else ""),
               f"  {self.duplicates} exact duplicates removed, {self.leakage} validation "
               f"examples share a prompt with training (leakage)",
               f"  {self.truncated} truncated and {self.dropped_too_long} dropped as too long",
               f"  split: {self.train_examples} train, {self.valid_examples} valid"
               + (f", {self.test_examples} test" if self.test_examples else "")]
        for label, st in (("train", self.train_stats), ("valid", self.valid_stats)):
            if st.examples:
                out.append(f"  {label} tokens: {st.tokens} ({st.trained_tokens} trained); length "
                           f"min {st.length_min}, median {st.length_median:g}, "
                           f"p95 {st.length_p95:g}, max {st.length_max}")
        out += [f"  note: {n}" for n in self.notes]
        if self.problems:
            out.append(f"Problems ({len(self.errors)} errors, {len(self.warnings)} warnings):")
            for p in self.problems[:max_problems]:
                tag = "" if p.severity == "error" else " (warning)"
                out.append(f"  {p}{tag}")
            if len(self.problems) > max_problems:
                out.append(f"  ... and {len(self.problems) - max_problems} more")
        for i, ex in enumerate(self.preview):
            out.append(f"Preview {i + 1} ({ex.source}), trained text in "
                       f"{TRAIN_OPEN}{TRAIN_CLOSE}:")
            out.append("  " + ex.marked_text.replace("\n", "\n  "))
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Evaluation (issue 15): the forgetting probe, shipped-file parity, the run's baseline


@dataclass
class ProbeItem(Result):
    """One general prompt of the forgetting probe: the reference answer's mean log-likelihood
    per token and the greedy answer, for the base and with the adapter."""

    tag: ClassVar[str] = "eval.probe.item"
    id: str = ""
    category: str = ""
    prompt: str = ""
    reference: str = ""
    base_answer: str = ""
    adapter_answer: str = ""
    base_logprob: float = 0.0     # mean log p per reference token (nats, <= 0)
    adapter_logprob: float = 0.0
    changed: bool = False         # the greedy answers differ


@dataclass
class ProbeResult(Result):
    """The forgetting probe: did the adapter keep the base's general skills?"""

    tag: ClassVar[str] = "eval.probe"
    adapter: str = ""
    base_model: str = ""
    probe_file: str = ""
    probe_sha256: str = ""
    max_tokens: int = 0
    items: list[ProbeItem] = field(default_factory=list)
    base_mean_logprob: float = 0.0
    adapter_mean_logprob: float = 0.0
    logprob_drop: float = 0.0      # base - adapter, nats per reference token (> 0: worse)
    categories: dict = field(default_factory=dict)  # category -> {items, drop, changed}
    changed: int = 0
    changed_share: float = 0.0
    base_exact: int = 0            # greedy answers equal to the reference (normalised)
    adapter_exact: int = 0
    max_drop: float = 0.0          # the threshold the verdict used
    passed: bool = True
    verdict: str = ""
    note: str = ""                 # e.g. a base that never knew the answers
    seconds: float = 0.0

    def format_text(self, show: int = 20) -> str:
        out = [self.verdict] + ([f"  note: {self.note}"] if self.note else []) + [
               f"  reference log-likelihood per token: base {self.base_mean_logprob:.3f}, "
               f"adapter {self.adapter_mean_logprob:.3f} (drop {self.logprob_drop:+.3f} nats)",
               f"  greedy answers changed: {self.changed} of {len(self.items)} "
               f"({self.changed_share:.0%}); equal to the reference: base {self.base_exact}, "
               f"adapter {self.adapter_exact}"]
        for name, c in self.categories.items():
            out.append(f"    {name}: drop {c['drop']:+.3f} nats/token, {c['changed']} of "
                       f"{c['items']} answers changed")
        changed = [i for i in self.items if i.changed]
        if changed:
            out.append("  changed answers (largest log-likelihood drop first):")
        for i in sorted(changed, key=lambda i: i.adapter_logprob - i.base_logprob)[:show]:
            out += [f"    [{i.id}] {i.prompt!r}", f"      reference {i.reference!r}",
                    f"      base      {i.base_answer!r}", f"      adapter   {i.adapter_answer!r}"]
        if len(changed) > show:
            out.append(f"    ... and {len(changed) - show} more")
        return "\n".join(out)


@dataclass
class ParityAnswer(Result):
    """One held-out prompt through one shipped file, against MLX with the adapter applied."""

    tag: ClassVar[str] = "eval.parity.answer"
    prompt: str = ""
    source: str = ""               # the dataset's file:line
    expected: str = ""             # MLX + adapter's greedy answer
    answer: str = ""               # this file's greedy answer
    identical: bool = False
    equals_base: bool = False      # the answer is the base model's
    diverges_at: int | None = None  # first differing token (index into the answer)
    expected_token: str = ""       # MLX's token there ("" where MLX had stopped)
    answer_token: str = ""         # the file's token there ("" where it stopped)
    mlx_gap: float | None = None   # MLX's top-2 gap there / largest |logit|
    near_tie: bool | None = None   # mlx_gap below the stated epsilon


@dataclass
class ParityTarget(Result):
    """One shipped file (the fused folder or a GGUF) and its answers."""

    tag: ClassVar[str] = "eval.parity.target"
    name: str = ""                 # "fused model" or the GGUF's file name
    kind: str = ""                 # "fused" | "gguf"
    path: str = ""
    quant: str = ""
    identical: int = 0
    total: int = 0
    share_identical: float = 0.0
    equals_base: int = 0
    adapter_lost: bool = False     # answers like the base, not like the adapter
    answers: list[ParityAnswer] = field(default_factory=list)
    note: str = ""


@dataclass
class ParityResult(Result):
    """Shipped-file parity: do the fused model and every GGUF answer like MLX + adapter?"""

    tag: ClassVar[str] = "eval.parity"
    adapter: str = ""
    base_model: str = ""
    prompts: int = 0
    general_prompts: int = 0       # of them, the probe's (the run had fewer held-out prompts)
    max_tokens: int = 0
    tie_epsilon: float = 0.0
    adapter_differs_from_base: int = 0  # prompts where MLX + adapter's answer is not the base's
    targets: list[ParityTarget] = field(default_factory=list)
    passed: bool = True
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def format_text(self, show: int = 10) -> str:
        out = [self.verdict]
        for t in self.targets:
            line = f"  {t.name}: {t.identical} of {t.total} answers identical to MLX + adapter"
            if t.adapter_lost:
                line += f" -- the adapter was lost ({t.equals_base} of {t.total} are the base's)"
            out.append(line + (f" ({t.note})" if t.note else ""))
            for a in [a for a in t.answers if not a.identical][:show]:
                tie = {True: "a near-tie in MLX", False: "not a near-tie in MLX",
                       None: "no MLX logits there"}[a.near_tie]
                gap = f", gap {a.mlx_gap:.2e}" if a.mlx_gap is not None else ""
                out += [f"    {a.prompt!r} ({a.source})",
                        f"      MLX + adapter {a.expected!r}", f"      {t.kind:<13} {a.answer!r}",
                        f"      diverges at token {a.diverges_at}: {a.expected_token!r} vs "
                        f"{a.answer_token!r} ({tie}{gap})"]
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


@dataclass
class BaselineResult(Result):
    """The base model before the first training step (in the run record as ``baseline``):
    its validation loss and greedy answers to a seeded sample of held-out prompts."""

    tag: ClassVar[str] = "train.baseline"
    val_loss: float | None = None
    seed: int = 0
    max_tokens: int = 0
    # one per sampled prompt: source (file:line), prompt (text), prompt_tokens (ids, exactly
    # as trained), reference (the dataset's answer), answer (the base's greedy reply), tokens
    prompts: list[dict] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# `tailor generate --serve`: one loaded model answering many requests


@dataclass
class GenerateReply(GenerateResult):
    """One served request's reply (a ReplyFinished event carries it): ``text`` as far as it
    got (``stopped``: a cancel ended it), and how long the first token took."""

    tag: ClassVar[str] = "generate.reply"
    request: str = ""
    adapter: str = ""  # "" for the base model alone
    tokens: int = 0
    stopped: bool = False
    first_token_seconds: float | None = None  # from the request's turn to its first token
    seconds: float = 0.0


@dataclass
class GenerateServed(Result):
    """`tailor generate --serve` ended (end of input, ``quit``): how many requests it answered."""

    tag: ClassVar[str] = "generate.serve"
    model: str = ""
    requests: int = 0
    load_seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# `tailor merge`: several adapters of one base combined into a new adapter or a fused model


@dataclass
class MergeResult(Result):
    """What `tailor merge` wrote: the new library adapter (``adapter``, ``path``) or, with
    ``--fuse``, the fused model folder (``fused_path``); how (``method``, ``settings``), from
    what (``parents`` with their ``weights``), and what the result kept: ``exact`` when it is
    the method's result itself, else ``energy_kept`` per layer (share of the merged change's
    squared norm in the rank-``rank`` adapter) and its minimum."""

    tag: ClassVar[str] = "merge"
    adapter: str = ""
    path: str = ""
    fused_path: str = ""
    method: str = ""
    parents: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    rank: int = 0
    layers: int = 0
    exact: bool = True
    energy_kept: dict = field(default_factory=dict)
    min_energy_kept: float | None = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------------------------
# `tailor eval`: held-out evaluation of an adapter against its base (issue 15)


@dataclass
class EvalScores(Result):
    """One model's figures on the evaluated examples (the base, or the base + adapter).
    ``loss``: mean negative log-likelihood per trained token (nats); the answer scores are
    means over the answer-style examples (None when there are none)."""

    tag: ClassVar[str] = "eval.scores"
    loss: float | None = None
    perplexity: float | None = None
    trained_tokens: int = 0
    exact_match: float | None = None   # share 0..1
    f1: float | None = None            # token-level F1, 0..1
    rouge_l: float | None = None       # ROUGE-L F-measure, 0..1
    answer_words: float | None = None  # mean answer length, words
    answer_tokens: float | None = None  # mean answer length, tokens

    def __post_init__(self):
        _floats_back(self, ("loss", "perplexity", "exact_match", "f1", "rouge_l",
                            "answer_words", "answer_tokens"))


def _floats_back(obj, names) -> None:
    """A non-finite figure travels as text ("inf", "nan": see _finite); read it back as the
    float it was, so a report read from its record formats like the one computed."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str):
            try:
                setattr(obj, name, float(value))
            except ValueError:
                setattr(obj, name, None)


@dataclass
class EvalExample(Result):
    """One held-out example: the reference, both greedy answers, both losses and scores."""

    tag: ClassVar[str] = "eval.example"
    source: str = ""              # the dataset's file:line
    prompt: str = ""              # the last user message ("" for text data)
    reference: str = ""
    base_answer: str = ""
    adapter_answer: str = ""
    base_loss: float | None = None
    adapter_loss: float | None = None
    trained_tokens: int = 0
    base_scores: dict = field(default_factory=dict)     # exact_match, f1, rouge_l, words
    adapter_scores: dict = field(default_factory=dict)
    change: float = 0.0           # > 0 better with the adapter: ROUGE-L gained, else loss saved
    worse: bool = False

    def __post_init__(self):
        _floats_back(self, ("base_loss", "adapter_loss", "change"))


@dataclass
class EvalReport(Result):
    """`tailor eval`: an adapter against its base on held-out examples, worse ones first;
    kept in the adapter's record (``<adapter>/evaluations/<id>.json``, ``path``) with what
    makes it reproducible: the data's, base's and adapter's hashes, settings, seed, versions.
    ``probe`` / ``parity``: the forgetting probe and shipped-file parity when they ran."""

    tag: ClassVar[str] = "eval.report"
    schema: str = "tailor.eval/1"
    id: str = ""
    adapter: str = ""
    adapter_status: str = ""
    adapter_sha256: str = ""
    created: float = 0.0
    data: dict = field(default_factory=dict)        # path, sha256, split, schema, counts
    base_model: dict = field(default_factory=dict)  # path, given, sha256, architecture
    settings: dict = field(default_factory=dict)    # limit, seed, max_tokens, batch_size...
    versions: dict = field(default_factory=dict)
    base: EvalScores = field(default_factory=EvalScores)
    tuned: EvalScores = field(default_factory=EvalScores)  # the base with the adapter
    examples: list[EvalExample] = field(default_factory=list)
    worse: int = 0
    better: int = 0
    verdict: str = ""
    notes: list[str] = field(default_factory=list)  # what a reader should know first
    probe: ProbeResult | None = None
    parity: ParityResult | None = None
    path: str = ""                # the report's file in the adapter's record
    markdown: str = ""            # the --markdown file, when one was written
    seconds: float = 0.0

    def format_text(self, show: int = 10) -> str:
        def pct(v):
            return "-" if v is None else f"{v:.0%}"

        def num(v, fmt=".3f"):
            return "-" if v is None else format(v, fmt)

        out = [self.verdict] + [f"  note: {n}" for n in self.notes] + [
               f"  data: {self.data.get('path', '')} ({self.data.get('split', '')}"
               f", {len(self.examples)} of {self.data.get('examples', len(self.examples))} "
               f"examples, seed {self.settings.get('seed', 0)})",
               "                 base    adapter"]
        for label, b, a in (("loss", num(self.base.loss), num(self.tuned.loss)),
                            ("perplexity", num(self.base.perplexity, ".4g"),
                             num(self.tuned.perplexity, ".4g")),
                            ("exact match", pct(self.base.exact_match),
                             pct(self.tuned.exact_match)),
                            ("token F1", num(self.base.f1, ".2f"), num(self.tuned.f1, ".2f")),
                            ("ROUGE-L", num(self.base.rouge_l, ".2f"),
                             num(self.tuned.rouge_l, ".2f")),
                            ("answer words", num(self.base.answer_words, ".1f"),
                             num(self.tuned.answer_words, ".1f"))):
            out.append(f"  {label:<13} {b:>7}  {a:>9}")
        shown = self.examples[:show]
        if shown:
            out.append("  examples (where the adapter got worse first):")
        for e in shown:
            mark = "worse" if e.worse else ("better" if e.change > 0 else "same")
            out.append(f"    [{mark}] {e.source}  {e.prompt!r}" if e.prompt else
                       f"    [{mark}] {e.source}  loss {num(e.base_loss)} -> "
                       f"{num(e.adapter_loss)}")
            if e.prompt:
                out += [f"      reference {e.reference!r}", f"      base      {e.base_answer!r}",
                        f"      adapter   {e.adapter_answer!r}"]
        if len(self.examples) > show:
            out.append(f"    ... and {len(self.examples) - show} more")
        for extra in (self.probe, self.parity):
            if extra is not None:
                out.append(extra.format_text())
        if self.path:
            out.append(f"  kept in the adapter's record: {self.path}")
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# Hand-offs beyond Ollama (issue 23): PEFT adapters, LM Studio, the Hugging Face Hub


@dataclass
class PeftExportResult(Result):
    """`tailor export --format peft`: the PEFT adapter folder written (``path``: its
    adapter_model.safetensors and adapter_config.json) and the LoraConfig it carries."""

    tag: ClassVar[str] = "export.peft"
    path: str = ""
    adapter: str = ""
    base_model: str = ""          # base_model_name_or_path in the config
    rank: int = 0
    alpha: float = 0.0
    use_rslora: bool = False
    use_dora: bool = False
    target_modules: list[str] = field(default_factory=list)
    tensor_count: int = 0
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class LMStudioPlacement(Result):
    """`tailor lmstudio` / `export --lmstudio`: where the GGUF now is for LM Studio (``path``,
    in ``models_folder``, found from ``models_folder_from``), listed as ``model_key``, and
    ``method``: hard link, copy, lms import (...), or already there. ``renamed``: a different
    file had the name, so a new model folder (-2...) was used."""

    tag: ClassVar[str] = "lmstudio"
    path: str = ""
    source: str = ""
    models_folder: str = ""
    models_folder_from: str = ""
    model_key: str = ""
    method: str = ""
    renamed: bool = False


@dataclass
class PushFile(Result):
    """One file of a Hub push: its path in the repository, bytes (None until written), what."""

    tag: ClassVar[str] = "push.file"
    path: str = ""
    size: int | None = None
    what: str = ""


@dataclass
class PushPlan(Result):
    """`tailor push --dry-run`, and the list a push shows before it uploads: the files (exact
    sizes once ``staged``), the repository and whether it is private. Nothing is uploaded."""

    tag: ClassVar[str] = "push.plan"
    adapter: str = ""
    repo: str = ""
    private: bool = False
    files: list[PushFile] = field(default_factory=list)
    staged: bool = False

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass
class PushResult(Result):
    """`tailor push`: the repository (``url``) and the commit made (``commit_url``), with the
    files it holds."""

    tag: ClassVar[str] = "push"
    adapter: str = ""
    repo: str = ""
    url: str = ""
    commit_url: str = ""
    private: bool = False
    files: list[PushFile] = field(default_factory=list)
    uploaded_bytes: int = 0
    seconds: float = 0.0


@dataclass
class HostCheck(Result):
    """One host of a distributed run as `tailor hosts check` (and the launcher) found it:
    ``reachable`` over ssh (a ``local`` rank needs no ssh), its Tailor and MLX versions, the base
    model (``model``: present, missing, or "" not asked) and the dataset (``dataset``: one of
    the DATASET_* states below; ``dataset_path``: where that host's ranks will read it). ``ok``
    False: ``message`` says what is wrong and ``hint`` what to do."""

    tag: ClassVar[str] = "hosts.host"
    host: str = ""
    ips: list[str] = field(default_factory=list)
    local: bool = False
    reachable: bool = False
    node: str = ""                # the host's own name for itself
    tailor: str = ""
    mlx: str = ""
    model: str = ""
    dataset: str = ""
    dataset_path: str = ""
    ok: bool = False
    message: str = ""
    hint: str = ""


DATASET_SAME = "same"                 # the same bytes at the same path
DATASET_COPY_THERE = "copy there"     # an earlier verified copy in the host's Tailor cache
DATASET_WILL_COPY = "will be copied"  # missing or different: the launcher copies it first
DATASET_MISSING = "missing"
DATASET_DIFFERENT = "different"


@dataclass
class HostsReport(Result):
    """`tailor hosts check`: every host of the list, in rank order, checked as the launcher
    checks them before a run (``model``/``data``: the paths checked, "" when not given)."""

    tag: ClassVar[str] = "hosts.check"
    hosts: list[HostCheck] = field(default_factory=list)
    model: str = ""
    data: str = ""

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)


@dataclass
class ExportQuality(Result):
    """How far an exported GGUF, run in llama.cpp, is from the full-precision model
    (engine/export/quality.py): kept in the export's verification as ``quality`` and in the
    adapter's exports list. ``measured`` False: ``note`` says why not. KL in nats per token."""

    tag: ClassVar[str] = "export.quality"
    measured: bool = False
    kl_mean: float | None = None
    kl_median: float | None = None
    kl_p99: float | None = None
    kl_max: float | None = None
    perplexity: float | None = None            # the file's, exp(mean NLL of the next token)
    reference_perplexity: float | None = None  # the full-precision model's, same tokens
    same_top: float | None = None              # share of positions with the same top token
    tokens: int = 0                            # scored positions
    examples: int = 0
    context_tokens: int = 0                    # tokens evaluated (scored ones and their prefix)
    text: str = ""                             # what the text was
    reference: str = ""                        # what the reference was
    runtime: str = ""                          # how llama.cpp computed the file's logits
    note: str = ""
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for `tailor export`'s output."""
        if not self.measured:
            return self.note or "quality not measured"
        return (f"quality: mean KL divergence {self.kl_mean:.3g} nats/token from the full-"
                f"precision model (99th percentile {self.kl_p99:.3g}), perplexity "
                f"{self.perplexity:.4g} (full precision {self.reference_perplexity:.4g}), same "
                f"top token on {self.same_top:.1%}, over {self.tokens} tokens of {self.text}")

    @classmethod
    def of(cls, export: "ExportResult | dict | None") -> "ExportQuality | None":
        """The quality record of an export (its result or record), None when it has none."""
        verification = ExportResult.coerce(export).verification if export else {}
        q = verification.get("quality")
        return cls.coerce(q) if isinstance(q, dict) else None


@dataclass
class ListedExport(Result):
    """One entry of an adapter's exports list (engine/adapter_exports.py): the file, its type,
    size and export time as exported, its quality, and whether it was replaced since."""

    tag: ClassVar[str] = "export.listed"
    path: str = ""
    quant: str = ""
    kind: str = "model"
    size: int = 0
    mtime_ns: int = 0
    exported: float = 0.0       # when (seconds since the epoch)
    seconds: float | None = None  # how long the export took
    quality: ExportQuality | None = None
    imatrix: str = ""           # the importance matrix's file ("given": one without a file)
    changed: bool = False


@dataclass
class QuantTypeInfo(Result):
    """One GGUF file type as `tailor export --list-types` lists it (engine/export/quant_types):
    ``expected_bytes`` is the planned file's size for the model asked about (None without)."""

    tag: ClassVar[str] = "export.type"
    name: str = ""
    bits_per_weight: float = 0.0
    use: str = ""
    wants_imatrix: bool = False
    expected_bytes: int | None = None


@dataclass
class QuantTypeList(Result):
    """`tailor export --list-types [--model DIR | --adapter NAME]`: every type, in order."""

    tag: ClassVar[str] = "export.types"
    model: str = ""
    types: list[QuantTypeInfo] = field(default_factory=list)
