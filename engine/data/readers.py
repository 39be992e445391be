"""Streamed readers: bytes on disk -> ``Record(line, value)`` with 1-based line numbers.

Formats: JSON Lines, JSON (an array, or an object holding one), CSV/TSV with a header row, plain
text (blank-line separated blocks). Encodings: UTF-8 (BOM optional), UTF-16 LE/BE with a BOM;
anything else is an error naming the line. Lines are read one at a time with a length cap, so a
huge or binary file is an error, never an out-of-memory. Per-example problems go to a
``ProblemLog`` (strict mode turns the first into a ``TailorError``); whole-file problems raise.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ..events import TailorError
from .report import Problem

MiB = 1 << 20
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
           ".tab": "tsv", ".txt": "text", ".text": "text", ".md": "text"}
SUPPORTED = ", ".join(sorted(FORMATS))
# Column names a CSV/TSV header may use (see schemas.py).
KNOWN_COLUMNS = {"text", "prompt", "completion", "question", "answer", "input", "output",
                 "instruction", "system", "response"}


@dataclass
class Record:
    line: int
    value: Any


class ProblemLog:
    """Collects problems; in strict mode the first error stops the import."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.problems: list[Problem] = []

    def error(self, file: str, line: int, message: str, column: int | None = None) -> None:
        problem = Problem(file, line, message, column)
        if self.strict:
            raise TailorError(str(problem), hint="fix the line, or import in lenient mode "
                                                 "(without --strict) to skip bad examples")
        self.problems.append(problem)

    def warning(self, file: str, line: int, message: str, column: int | None = None) -> None:
        self.problems.append(Problem(file, line, message, column, severity="warning"))


class ReadProgress:
    """Bytes read so far, for the progress bar; `tick` also checks for a stop request."""

    def __init__(self, total: int, callback: Callable[[int, int], None] | None = None,
                 cancel=None, every: int = 4096):
        self.total, self.callback, self.cancel, self.every = total, callback, cancel, every
        self._n = 0

    def tick(self, position: Callable[[], int]) -> None:
        self._n += 1
        if self._n % self.every == 0:
            if self.cancel is not None:
                self.cancel.raise_if_cancelled()
            if self.callback is not None:
                self.callback(position(), self.total)


def format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TailorError(f"{path}: unsupported file type '{path.suffix or '(none)'}'",
                          hint=f"use one of {SUPPORTED}")
    return fmt


# ----------------------------------------------------------------------------------------------
# Encodings


def sniff_encoding(head: bytes, display: str) -> tuple[str, int]:
    """(codec, BOM length) from the first bytes; raises on UTF-32 and on binary data."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise TailorError(f"{display}:1: UTF-32 text is not supported",
                          hint="save the file as UTF-8")
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE):
        return "utf-16-le", 2
    if head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16-be", 2
    if head.count(0) * 4 > len(head) and len(head) >= 4:
        if max(head[0::2].count(0), head[1::2].count(0)) * 3 > len(head):
            raise TailorError(f"{display}:1: this looks like UTF-16 text without a byte-order "
                              "mark, which cannot be read reliably",
                              hint="save the file as UTF-8 (or UTF-16 with BOM)")
    if _looks_binary(head):
        raise TailorError(f"{display}:1: this is not a text file (binary data: control bytes "
                          "or invalid UTF-8 in the first bytes)",
                          hint="export the dataset as UTF-8 JSON Lines, JSON, CSV or text")
    return "utf-8", 0


def _looks_binary(head: bytes) -> bool:
    if not head:
        return False
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    # A multi-byte character cut at the end of `head` costs at most one replacement.
    invalid = max(0, head.decode("utf-8", "replace").count("\ufffd") - 1)
    return (control + invalid) * 20 > len(head)


def _decode_error(raw: bytes, start: int, encoding: str) -> tuple[int, str]:
    column = len(raw[:start].decode(encoding, "replace")) + 1
    return column, (f"bytes that are not valid {encoding.upper()} (0x{raw[start]:02x}); save "
                    "the file as UTF-8")


def iter_lines(path: Path, display: str, log: ProblemLog, max_line_bytes: int,
               progress: ReadProgress | None = None, meta: dict | None = None
               ) -> Iterator[tuple[int, str]]:
    """(line number, text with its line ending) for each line; undecodable lines are logged
    and skipped. ``meta['encoding']`` is set to the detected encoding."""
    with open(path, "rb") as f:
        head = f.read(8192)
        encoding, bom = sniff_encoding(head, display)
        if meta is not None:
            meta["encoding"] = encoding + ("-bom" if bom else "")
        f.seek(bom)
        if encoding == "utf-8":
            yield from _utf8_lines(f, display, log, max_line_bytes, progress)
        else:
            yield from _utf16_lines(f, encoding, display, log, max_line_bytes, progress)


def _utf8_lines(f, display, log, cap, progress):
    line_no = 0
    while True:
        raw = f.readline(cap + 1)
        if not raw:
            return
        line_no += 1
        if progress is not None:
            progress.tick(f.tell)
        if len(raw) > cap and not raw.endswith(b"\n"):
            while True:  # skip the rest of the over-long line without holding it
                chunk = f.readline(MiB)
                if not chunk or chunk.endswith(b"\n"):
                    break
            log.error(display, line_no, f"line longer than {cap // MiB} MiB, skipped")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            column, message = _decode_error(raw, e.start, "utf-8")
            log.error(display, line_no, message, column)
            continue
        yield line_no, text


def _utf16_lines(f, encoding, display, log, cap, progress):
    stream = io.TextIOWrapper(f, encoding=encoding, errors="strict", newline="")
    line_no = 0
    cap_chars = cap // 2
    while True:
        try:
            text = stream.readline(cap_chars + 1)
        except UnicodeDecodeError as e:
            raise TailorError(f"{display}:{line_no + 1}: bytes that are not valid "
                              f"{encoding.upper()} ({e.reason})",
                              hint="save the file as UTF-8") from None
        if not text:
            return
        line_no += 1
        if progress is not None:
            progress.tick(lambda: f.tell() if not f.closed else 0)
        if len(text) > cap_chars and not text.endswith(("\n", "\r")):
            while True:
                chunk = stream.readline(MiB)
                if not chunk or chunk.endswith(("\n", "\r")):
                    break
            log.error(display, line_no, f"line longer than {cap // MiB} MiB, skipped")
            continue
        yield line_no, text


# ----------------------------------------------------------------------------------------------
# JSON


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use null or a number)")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_WS = " \t\r\n"


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WS:
        pos += 1
    return pos


def parse_json_line(text: str) -> Any:
    """Parse one JSON value; raises ValueError with ``.colno`` set when known."""
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as e:
        err = ValueError(f"invalid JSON: {e.msg}")
        err.colno = e.colno  # type: ignore[attr-defined]
        raise err from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    except ValueError as e:  # NaN / Infinity from _reject_constant
        err = ValueError(str(e))
        for literal in ("-Infinity", "Infinity", "NaN"):
            if literal in str(e):
                err.colno = text.find(literal) + 1  # type: ignore[attr-defined]
                break
        raise err from None


def read_jsonl(path: Path, display: str, log: ProblemLog, max_line_bytes: int,
               progress: ReadProgress | None = None, meta: dict | None = None) -> Iterator[Record]:
    meta = meta if meta is not None else {}
    meta.setdefault("blank_lines", 0)
    for line_no, text in iter_lines(path, display, log, max_line_bytes, progress, meta):
        if not text.strip():
            meta["blank_lines"] += 1
            continue
        try:
            value = parse_json_line(text.rstrip("\r\n"))
        except ValueError as e:
            log.error(display, line_no, str(e), getattr(e, "colno", None))
            continue
        yield Record(line_no, value)


def read_json(path: Path, display: str, log: ProblemLog, max_bytes: int,
              progress: ReadProgress | None = None, meta: dict | None = None) -> Iterator[Record]:
    """A JSON array of examples, or an object holding one (``{"data": [...]}``). Read whole
    (up to ``max_bytes``); elements are decoded one by one so each keeps its line number."""
    meta = meta if meta is not None else {}
    size = path.stat().st_size
    if size > max_bytes:
        raise TailorError(f"{display}: {size / MiB:.0f} MiB is too large for a JSON file "
                          f"(limit {max_bytes // MiB} MiB)",
                          hint="convert it to JSON Lines (one example per line), which is "
                               "read as a stream")
    raw = path.read_bytes()
    encoding, bom = sniff_encoding(raw[:8192], display)
    meta["encoding"] = encoding + ("-bom" if bom else "")
    try:
        text = raw[bom:].decode(encoding)
    except UnicodeDecodeError as e:
        line = raw[bom:e.start].decode(encoding, "replace").count("\n") + 1
        raise TailorError(f"{display}:{line}: bytes that are not valid {encoding.upper()} "
                          f"(0x{raw[bom + e.start]:02x})", hint="save the file as UTF-8") from None
    del raw
    pos = _skip_ws(text, 0)
    if pos == len(text):
        raise TailorError(f"{display}: the file is empty", hint="add examples to it")
    if text[pos] == "[":
        yield from _array_items(text, pos, display, progress)
        return
    if text[pos] != "{":
        raise TailorError(f"{display}:{_line(text, pos)}: expected a JSON array of examples "
                          f"or an object holding one, found {text[pos]!r}")
    value, end = _decode_at(text, pos, display)
    if _skip_ws(text, end) < len(text):
        # More values follow the first object: this is JSON Lines with a .json name.
        meta["note"] = "the .json file holds one object per line; read as JSON Lines"
        meta.setdefault("blank_lines", 0)
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                meta["blank_lines"] += 1
                continue
            try:
                value = parse_json_line(line)
            except ValueError as e:
                log.error(display, line_no, str(e), getattr(e, "colno", None))
                continue
            yield Record(line_no, value)
        return
    key = _examples_key(value)
    if key is None:
        # One object that is itself a single example (or nothing we know).
        yield Record(_line(text, pos), value)
        return
    meta["note"] = f"examples read from the list under the key {key!r}"
    yield from _array_items(text, _find_key_value(text, pos, key, display), display, progress)


def _examples_key(obj: dict) -> str | None:
    from .schemas import detect_schema

    if detect_schema(obj) is not None:
        return None
    lists = [k for k, v in obj.items() if isinstance(v, list) and v and
             all(isinstance(x, dict) for x in v[:10])]
    for preferred in ("data", "examples", "train", "rows", "records", "items", "dataset"):
        if preferred in lists:
            return preferred
    return lists[0] if lists else None


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _decode_at(text: str, pos: int, display: str) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as e:
        raise TailorError(f"{display}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except RecursionError:
        raise TailorError(f"{display}:{_line(text, pos)}: JSON nested too deeply") from None
    except ValueError as e:  # NaN / Infinity
        raise TailorError(f"{display}:{_line(text, pos)}: {e}") from None


def _find_key_value(text: str, pos: int, key: str, display: str) -> int:
    """Position of the value of ``key`` in the object starting at ``pos`` (already valid)."""
    pos = _skip_ws(text, pos + 1)
    while text[pos] != "}":
        k, pos = _decode_at(text, pos, display)
        pos = _skip_ws(text, _skip_ws(text, pos) + 1)  # past ':'
        if k == key:
            return pos
        _, pos = _decode_at(text, pos, display)
        pos = _skip_ws(text, pos)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
    raise TailorError(f"{display}: key {key!r} not found")  # pragma: no cover - checked before


def _array_items(text: str, pos: int, display: str, progress: ReadProgress | None
                 ) -> Iterator[Record]:
    n = len(text)
    line, last = 1 + text.count("\n", 0, pos), pos
    opened = line
    pos = _skip_ws(text, pos + 1)
    if pos < n and text[pos] == "]":
        return
    while True:
        if pos >= n:
            raise TailorError(f"{display}:{opened}: the JSON array that starts here is not "
                              "closed (missing ']')")
        line += text.count("\n", last, pos)
        last = pos
        value, end = _decode_at(text, pos, display)
        yield Record(line, value)
        if progress is not None:
            progress.tick(lambda: end)
        pos = _skip_ws(text, end)
        if pos >= n:
            raise TailorError(f"{display}:{opened}: the JSON array that starts here is not "
                              "closed (missing ']')")
        if text[pos] == "]":
            return
        if text[pos] != ",":
            raise TailorError(f"{display}:{_line(text, pos)}: expected ',' or ']' between "
                              f"examples, found {text[pos]!r}")
        pos = _skip_ws(text, pos + 1)


# ----------------------------------------------------------------------------------------------
# CSV / TSV and plain text


def read_csv(path: Path, display: str, log: ProblemLog, max_line_bytes: int, delimiter: str,
             progress: ReadProgress | None = None, meta: dict | None = None) -> Iterator[Record]:
    meta = meta if meta is not None else {}
    meta.setdefault("blank_lines", 0)
    state = {"line": 0}

    def lines():
        for line_no, text in iter_lines(path, display, log, max_line_bytes, progress, meta):
            state["line"] = line_no
            yield text

    if csv.field_size_limit() < max_line_bytes:
        csv.field_size_limit(max_line_bytes)
    reader = csv.reader(lines(), delimiter=delimiter)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            log.error(display, state["line"], f"unreadable row: {e}")
            start = state["line"] + 1
            continue
        line, start = start, state["line"] + 1
        if not row or all(not c.strip() for c in row):
            meta["blank_lines"] += 1
            continue
        if header is None:
            header = [c.strip().lower() for c in row]
            if not KNOWN_COLUMNS.intersection(header):
                raise TailorError(
                    f"{display}:{line}: the first row is not a header naming the columns "
                    f"(found {', '.join(repr(c) for c in row[:5])})",
                    hint="add a header row, e.g. prompt,completion or instruction,input,output "
                         "or text")
            continue
        if len(row) != len(header):
            log.error(display, line, f"row has {len(row)} fields but the header has "
                                     f"{len(header)}")
            continue
        bad = next((i for i, c in enumerate(row) if "\x00" in c), None)
        if bad is not None:
            log.error(display, line, f"field {bad + 1} ({header[bad]!r}) contains a NUL byte")
            continue
        yield Record(line, dict(zip(header, row)))
    if header is None:
        raise TailorError(f"{display}: the file is empty", hint="add a header row and examples")


def read_text(path: Path, display: str, log: ProblemLog, max_line_bytes: int,
              progress: ReadProgress | None = None, meta: dict | None = None) -> Iterator[Record]:
    """Plain text: each block of lines separated by a blank line is one example."""
    block: list[str] = []
    start = 0
    for line_no, text in iter_lines(path, display, log, max_line_bytes, progress, meta):
        if text.strip():
            if not block:
                start = line_no
            block.append(text)
            if sum(len(b) for b in block) > max_line_bytes:
                log.error(display, start, f"text block longer than {max_line_bytes // MiB} "
                                          "MiB, skipped")
                block = []
        elif block:
            yield Record(start, {"text": _join_block(block)})
            block = []
        if "\x00" in text:
            log.error(display, line_no, "NUL byte in text", text.index("\x00") + 1)
            block = []
    if block:
        yield Record(start, {"text": _join_block(block)})


def _join_block(lines: list[str]) -> str:
    return "".join(lines).replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")


def read_records(path: Path, fmt: str, display: str, log: ProblemLog, max_line_bytes: int,
                 progress: ReadProgress | None = None, meta: dict | None = None
                 ) -> Iterator[Record]:
    if fmt == "jsonl":
        return read_jsonl(path, display, log, max_line_bytes, progress, meta)
    if fmt == "json":
        return read_json(path, display, log, max_line_bytes * 32, progress, meta)
    if fmt in ("csv", "tsv"):
        return read_csv(path, display, log, max_line_bytes, "," if fmt == "csv" else "\t",
                        progress, meta)
    if fmt == "text":
        return read_text(path, display, log, max_line_bytes, progress, meta)
    raise TailorError(f"{display}: unsupported format {fmt}")  # pragma: no cover
