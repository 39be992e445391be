"""Streamed readers: bytes on disk -> ``Record(line, value)`` with 1-based line numbers.

Formats: JSON Lines, JSON (an array, or an object holding one), CSV/TSV with a header row, plain
text (blank-line separated blocks). Encodings: UTF-8 (BOM optional), UTF-16 LE/BE with a BOM;
anything else is an error naming the line. Lines (and JSON array elements) are read one at a
time with a length cap, so a huge or binary file is an error, never an out-of-memory.
Per-example problems go to a ``ProblemLog`` (strict mode turns the first into a
``TailorError``); whole-file problems raise.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..events import TailorError
from .json_stream import (CHUNK_BYTES, DECODER, LAST_WINS_DECODER, TOO_LONG, BadValue,
                          DuplicateKey, JsonWindow, find_duplicate_key, size_text)
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


_UNPACK = "unpack it first and choose the dataset file inside"
_EXPORT = "export the data as JSON Lines (.jsonl), CSV or text"
_NOT_DATA = "choose the dataset file (.jsonl, .json, .csv or .txt) instead"


def _zip_kind(head: bytes) -> str:
    # The first member's name (local file header, offset 30) tells Office files from plain zips.
    name = head[30:30 + int.from_bytes(head[26:28], "little")] if len(head) >= 30 else b""
    if name.startswith((b"[Content_Types].xml", b"xl/", b"word/", b"ppt/", b"docProps/")):
        return "an Office document (xlsx/docx, a ZIP archive inside)"
    if name == b"mimetype" and b"opendocument" in head[30:200]:
        return "an OpenDocument file (ods/odt, a ZIP archive inside)"
    return "a ZIP archive"


# (test on the first bytes, what the file is, hint). Checked before any text decoding: an
# uncompressed (stored) zip holds its members' text verbatim, so it otherwise reads as text.
_CONTAINERS: list[tuple[Callable[[bytes], bool], Callable[[bytes], str] | str, str]] = [
    (lambda h: h.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")), _zip_kind,
     _UNPACK + " (an Office file: save it as CSV)"),
    (lambda h: h.startswith(b"\x1f\x8b"), "a gzip-compressed file",
     "decompress it first (gunzip FILE) and choose the result"),
    (lambda h: h[:3] == b"BZh" and h[3:4].isdigit() and h[4:10] in (b"1AY&SY", b"\x17rE8P\x90"),
     "a bzip2-compressed file", "decompress it first (bunzip2 FILE) and choose the result"),
    (lambda h: h.startswith(b"\xfd7zXZ\x00"), "an xz-compressed file",
     "decompress it first (unxz FILE) and choose the result"),
    (lambda h: h.startswith(b"\x28\xb5\x2f\xfd"), "a zstd-compressed file",
     "decompress it first (unzstd FILE) and choose the result"),
    (lambda h: h.startswith(b"7z\xbc\xaf\x27\x1c"), "a 7-Zip archive", _UNPACK),
    (lambda h: h.startswith(b"Rar!\x1a\x07"), "a RAR archive", _UNPACK),
    (lambda h: h[257:262] == b"ustar", "a tar archive", _UNPACK),
    (lambda h: re.match(rb"%PDF-\d", h) is not None, "a PDF document",
     "copy its text into a .txt file (a blank line between examples), or " + _EXPORT),
    (lambda h: h.startswith(b"SQLite format 3\x00"), "an SQLite database",
     "export the table as .jsonl or .csv (e.g. sqlite3 -csv -header DB 'select ...')"),
    (lambda h: h.startswith(b"PAR1") and (b"\x00" in h or _looks_binary(h[4:])),
     "a Parquet file", "export it as .jsonl (e.g. pandas.read_parquet(f).to_json(out, "
                       "orient='records', lines=True))"),
    (lambda h: h.startswith(b"ARROW1"), "an Arrow/Feather file", "export it as .jsonl"),
    (lambda h: h.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"),
     "an old Microsoft Office file (.xls/.doc)", "save it as CSV"),
    (lambda h: len(h) >= 10 and h[8:10] in (b'{"', b"{}") and
     int.from_bytes(h[:8], "little") < 1 << 30, "a safetensors file (model weights)", _NOT_DATA),
    (lambda h: h.startswith(b"GGUF") and h[5:8] == b"\x00\x00\x00", "a GGUF file (model weights)",
     _NOT_DATA),
    (lambda h: h[:1] == b"\x80" and h[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"),
     "a Python pickle", _NOT_DATA + "; a pickle is never opened (it can run code)"),
    (lambda h: h.startswith(b"\x93NUMPY"), "a NumPy array file", _NOT_DATA),
    (lambda h: h.startswith(b"\x89HDF\r\n\x1a\n"), "an HDF5 file", _EXPORT),
    (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), "a PNG image", _NOT_DATA),
    (lambda h: h.startswith(b"\xff\xd8\xff"), "a JPEG image", _NOT_DATA),
    (lambda h: h[:6] in (b"GIF87a", b"GIF89a"), "a GIF image", _NOT_DATA),
    (lambda h: h.startswith(b"\x7fELF"), "a program (ELF executable)", _NOT_DATA),
]


def sniff_container(head: bytes, display: str) -> None:
    """Raise when the first bytes are an archive, a compressed file or another binary format
    (names what it is, with what to do)."""
    for test, what, hint in _CONTAINERS:
        if test(head):
            kind = what(head) if callable(what) else what
            raise TailorError(f"{display}: this is {kind}, not a text dataset", hint=hint)


def sniff_encoding(head: bytes, display: str) -> tuple[str, int]:
    """(codec, BOM length) from the first bytes; raises on archives and other binary formats,
    on UTF-32 and on binary data."""
    sniff_container(head, display)
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise TailorError(f"{display}:1: UTF-32 text is not supported",
                          hint="save the file as UTF-8")
    if head.startswith(codecs.BOM_UTF8):
        _no_nul_in_first_line(head[3:], display)
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
    _no_nul_in_first_line(head, display)
    return "utf-8", 0


def _no_nul_in_first_line(head: bytes, display: str) -> None:
    # UTF-8 text never holds NUL bytes; one in a later line is that line's problem (reported
    # per line), but one in the first line is a binary header of a format not listed above.
    at = head.find(b"\x00", 0, (head.find(b"\n") + 1) or len(head))
    if at >= 0:
        raise TailorError(f"{display}:1: this is not a text file (a NUL byte at byte {at + 1}: "
                          "binary data)",
                          hint="export the dataset as UTF-8 JSON Lines, JSON, CSV or text")


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

    def readline(limit: int, line: int) -> str:
        try:
            return stream.readline(limit)
        except UnicodeDecodeError as e:
            raise TailorError(f"{display}:{line}: bytes that are not valid "
                              f"{encoding.upper()} ({e.reason})",
                              hint="save the file as UTF-8") from None

    while True:
        text = readline(cap_chars + 1, line_no + 1)
        if not text:
            return
        line_no += 1
        if progress is not None:
            progress.tick(lambda: f.tell() if not f.closed else 0)
        if len(text) > cap_chars and not text.endswith(("\n", "\r")):
            while True:
                chunk = readline(MiB, line_no)
                if not chunk or chunk.endswith(("\n", "\r")):
                    break
            log.error(display, line_no, f"line longer than {cap // MiB} MiB, skipped")
            continue
        yield line_no, text


# ----------------------------------------------------------------------------------------------
# JSON


def parse_json_line(text: str) -> Any:
    """Parse one JSON value; raises ValueError with ``.colno`` set when known."""
    try:
        return DECODER.decode(text)
    except DuplicateKey as e:
        err = ValueError(str(e))
        found = find_duplicate_key(text)
        err.colno = found[0] + 1 if found else None  # type: ignore[attr-defined]
        raise err from None
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
              progress: ReadProgress | None = None, meta: dict | None = None,
              chunk_bytes: int = CHUNK_BYTES) -> Iterator[Record]:
    """A JSON array of examples, or an object holding one (``{"data": [...]}``), streamed in
    chunks of ``chunk_bytes``: one example is decoded at a time with its line number, and one
    longer than ``max_bytes`` characters is skipped and reported. ``meta['largest_buffer']``:
    the most text held at once. An object too long to be one example is walked twice more
    (pick the list, then stream it) rather than loaded."""
    f = _JsonFile(path, display, log, max_bytes, progress,
                  meta if meta is not None else {}, chunk_bytes)
    f.meta["largest_buffer"] = 0
    try:
        long_object_line = yield from _read_json_once(f)
        if long_object_line is not None:
            yield from _read_long_holder(f, long_object_line)
    finally:
        f.meta["largest_buffer"] = max([w.largest for w in f.windows] or [0])


@dataclass
class _JsonFile:
    """One .json file being read, and what every pass over it shares."""

    path: Path
    display: str
    log: ProblemLog
    max_bytes: int
    progress: ReadProgress | None
    meta: dict
    chunk_bytes: int
    windows: list = field(default_factory=list)

    def open_window(self, stream) -> JsonWindow:
        head = stream.read(8192)
        encoding, bom = sniff_encoding(head, self.display)
        self.meta["encoding"] = encoding + ("-bom" if bom else "")
        stream.seek(bom)
        self.windows.append(JsonWindow(stream, encoding, self.display, self.chunk_bytes))
        return self.windows[-1]

    def too_long(self, line: int) -> None:
        self.log.error(self.display, line, f"example longer than {size_text(self.max_bytes)}, "
                                           "skipped")

    def bad(self, value: BadValue) -> None:
        self.log.error(self.display, value.line, value.message, value.column)

    def ticker(self, stream, share: float = 1.0, before: float = 0.0):
        if self.progress is None:
            return None
        size = max(1, self.path.stat().st_size)
        return lambda: self.progress.tick(lambda: int(size * before + stream.tell() * share))


def _read_json_once(f: _JsonFile):
    """The first pass: an array streamed, one example, or a holder object small enough to
    hold, whose list is then streamed. -> None when done, or the line of an object too long
    for one example (the caller walks it again)."""
    with open(f.path, "rb") as stream:
        win = f.open_window(stream)
        pos = win.skip_ws(0)
        c = win.char(pos)
        if not c:
            raise TailorError(f"{f.display}: the file is empty", hint="add examples to it")
        if c == "[":
            end = yield from _records(win.items(pos, f.max_bytes, f.too_long, f.ticker(stream),
                                                f.bad))
            _no_trailing_data(win, end)
            return None
        if c != "{":
            raise TailorError(f"{f.display}:{win.line_at(pos)}: expected a JSON array of "
                              f"examples or an object holding one, found {c!r}")
        line = win.line_at(pos)
        value, end = win.value(pos, f.max_bytes, line)
        if value is TOO_LONG:
            return line
        # One example, or a holder of a list: keep its text to find the list in it.
        win.hold_from = pos
        if win.char(win.skip_ws(end)):
            yield from _as_json_lines(f.path, f.display, f.log, f.max_bytes, f.progress, f.meta)
            return None
        duplicate = value if isinstance(value, BadValue) else None
        if duplicate is not None:  # decode it as before to see what it holds
            value = LAST_WINS_DECODER.raw_decode(win.buf, pos - win.offset)[0]
        key = _examples_key(value)
        if duplicate is not None and (key is None or duplicate.depth == 1):
            _holder_duplicate(f.display, duplicate, key)
            f.bad(duplicate)  # one example with a duplicate key
            return None
        if key is None:
            yield Record(line, value)
            return None
        del value
        win.hold_from = None
        f.meta["note"] = f"examples read from the list under the key {key!r}"
        yield from _records(_holder_items(win, pos, key, f.max_bytes, f.too_long,
                                          f.ticker(stream), f.bad))
        return None


def _read_long_holder(f: _JsonFile, line: int):
    """An object too long for one example: find its list of examples (one pass), then stream
    it (another)."""
    with open(f.path, "rb") as stream:
        win = f.open_window(stream)
        pos = win.skip_ws(0)
        keys, end = _list_keys(win, pos, f.max_bytes, f.ticker(stream, 0.5))
        if win.char(win.skip_ws(end)):
            yield from _as_json_lines(f.path, f.display, f.log, f.max_bytes, f.progress, f.meta)
            return
    key = _pick_key(keys)
    if key is None:
        raise TailorError(f"{f.display}:{line}: this JSON object is longer than "
                          f"{size_text(f.max_bytes)} and holds no list of examples",
                          hint="a .json file holds an array of examples, or an object "
                               "with one such array (e.g. under \"data\")")
    f.meta["note"] = f"examples read from the list under the key {key!r}"
    with open(f.path, "rb") as stream:
        win = f.open_window(stream)
        yield from _records(_holder_items(win, win.skip_ws(0), key, f.max_bytes, f.too_long,
                                          f.ticker(stream, 0.5, 0.5), f.bad))


def _records(items) -> Iterator[Record]:
    """Records from ``JsonWindow.items``, passing on its return value (the end position)."""
    while True:
        try:
            line, value = next(items)
        except StopIteration as stop:
            return stop.value
        yield Record(line, value)


def _no_trailing_data(win: JsonWindow, end: int) -> None:
    last_line = win.line_at(end - 1)  # of the closing ']', still in the window
    pos = win.skip_ws(end)
    c = win.char(pos)
    if c:
        raise TailorError(f"{win.display}:{win.line_at(pos)}:{win.column_at(pos)}: unexpected "
                          f"{c!r} after the JSON array of examples (which ends on line "
                          f"{last_line})",
                          hint="a .json file holds one array of examples: remove what "
                               "follows it, or save one example per line as JSON Lines "
                               "(.jsonl)")


def _as_json_lines(path, display, log, max_bytes, progress, meta) -> Iterator[Record]:
    # More values follow the first object: this is JSON Lines with a .json name.
    meta["note"] = "the .json file holds one object per line; read as JSON Lines"
    return read_jsonl(path, display, log, max_bytes, progress, meta)


def _holder_duplicate(display: str, duplicate: BadValue, key: str | None) -> None:
    """Raise when the object holding the list of examples names a key twice (which list or
    setting was meant is unknown); a duplicate inside one example is that example's problem."""
    if key is not None and duplicate.depth == 1:
        where = f"{duplicate.line}:{duplicate.column}" if duplicate.column else duplicate.line
        raise TailorError(f"{display}:{where}: {duplicate.message}",
                          hint="the object that holds the examples must name each key once")


def _holder_items(win: JsonWindow, start: int, key: str, cap: int, too_long, tick, bad=None):
    """Elements of the list under ``key`` in the (already validated) object at ``start``."""
    pos, first = start + 1, True
    while True:
        member = win.next_member(pos, first, cap)
        first = False
        if isinstance(member, int):  # pragma: no cover - the key was found in this object
            raise TailorError(f"{win.display}: key {key!r} not found")
        name, pos = member
        if name == key:
            return (yield from win.items(pos, cap, too_long, tick, bad))
        _, pos = win.value(pos, cap, win.line_at(pos))


def _list_keys(win: JsonWindow, start: int, cap: int, tick) -> tuple[dict[str, bool], int]:
    """Walk (and validate) the object at ``start`` without holding it: {key: whether its value
    is a non-empty list whose first elements are objects} for each list member, and its end."""
    keys: dict[str, bool] = {}
    names: set = set()
    pos, first = start + 1, True
    while True:
        member = win.next_member(pos, first, cap)
        first = False
        if isinstance(member, int):
            return keys, member
        name, pos = member
        if name in names:
            at = win.line_at(pos)
            _holder_duplicate(win.display, BadValue(at, 0, 1, str(DuplicateKey(name))), name)
        names.add(name)
        if win.char(pos) != "[":
            _, pos = win.value(pos, cap, win.line_at(pos))
            continue
        head: list = []
        items = win.items(pos, cap, lambda line: None, tick)
        while True:
            try:
                _line, value = next(items)
            except StopIteration as stop:
                pos = stop.value
                break
            if len(head) < 10:
                head.append({} if isinstance(value, BadValue) else value)
        if isinstance(name, str):
            keys[name] = bool(head) and all(isinstance(x, dict) for x in head)


EXAMPLE_KEYS = ("data", "examples", "train", "rows", "records", "items", "dataset")


def _pick_key(lists: dict[str, bool]) -> str | None:
    """The key of the list of examples, among {key: is a list of objects}."""
    candidates = [k for k, ok in lists.items() if ok]
    for preferred in EXAMPLE_KEYS:
        if preferred in candidates:
            return preferred
    return candidates[0] if candidates else None


def _examples_key(obj: dict) -> str | None:
    from .schemas import detect_schema

    if detect_schema(obj) is not None:
        return None
    return _pick_key({k: isinstance(v, list) and bool(v) and
                      all(isinstance(x, dict) for x in v[:10]) for k, v in obj.items()})


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
        return read_json(path, display, log, max_line_bytes, progress, meta)
    if fmt in ("csv", "tsv"):
        return read_csv(path, display, log, max_line_bytes, "," if fmt == "csv" else "\t",
                        progress, meta)
    if fmt == "text":
        return read_text(path, display, log, max_line_bytes, progress, meta)
    raise TailorError(f"{display}: unsupported format {fmt}")  # pragma: no cover
