"""What the import found: problems as ``file:line[:column]: reason``, counts, token statistics
and a preview of rendered examples with the trained spans marked."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

# The plain-text preview marks trained text like this (the app highlights segments instead).
TRAIN_OPEN, TRAIN_CLOSE = "⟦", "⟧"


@dataclass
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem concerns the whole file
    message: str
    column: int | None = None
    severity: str = "error"  # "error" (example skipped) or "warning" (noted, nothing lost)

    @property
    def location(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line else self.file
        return f"{loc}:{self.column}" if self.column else loc

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class PreviewExample:
    source: str
    segments: list[tuple[str, bool]]  # (text, trained) in order; joined they are the rendering

    @property
    def marked_text(self) -> str:
        return "".join(f"{TRAIN_OPEN}{t}{TRAIN_CLOSE}" if trained else t
                       for t, trained in self.segments)


@dataclass
class TokenStats:
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
class DataReport:
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
        d = asdict(self)
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
