"""Streamed JSON: a file's decoded text as a sliding window, parsed one value at a time.

``JsonWindow`` reads a file in chunks, decodes them incrementally (UTF-8, UTF-16) and keeps only
the text from the value being parsed on, so memory is bounded by the largest example plus one
chunk, never by the file. Each value is decoded by the standard library's C decoder
(``raw_decode``: fast, and the same NaN/error rules as JSON Lines). A value cut by the end of
the window is first delimited by a structural scan (brackets and strings, no validation) and
then decoded whole, so values, errors and their file:line:column are the same for any chunk
size. (Streaming libraries such as ijson or json-stream report no line numbers.)
"""
from __future__ import annotations

import codecs
import json
import re
from typing import Any, Callable, Iterator

from ..events import TailorError

CHUNK_BYTES = 1 << 20
MiB = 1 << 20
TOO_LONG = object()  # stands for a value longer than the cap (skipped, not decoded)


class BadValue:
    """Stands for a value that decodes but cannot be used (an object with a duplicate key):
    where (line, column, depth of the object in the value) and why."""

    def __init__(self, line: int, column: int, depth: int, message: str):
        self.line, self.column, self.depth, self.message = line, column, depth, message


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (use null or a number)")


class DuplicateKey(ValueError):
    """A JSON object names one key twice (``json`` would silently keep the last value)."""

    def __init__(self, key: str):
        super().__init__(f"duplicate key {key!r} in a JSON object (only the last value would "
                         "be kept)")
        self.key = key


def _unique_keys(pairs: list) -> dict:
    # dict() in C, then one length compare: the common case costs little over a plain decode.
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return d


DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
# Only to see what a value with a duplicate key holds (whether it is a holder of examples).
LAST_WINS_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[][{}:]')


def find_duplicate_key(text: str, start: int = 0) -> tuple[int, str, int] | None:
    """(position, key, depth) of the first key repeated in one object of the JSON value at
    ``start`` of ``text`` (depth 1: the outermost object), or None. Only run once a decode
    has found a duplicate (rare), to say where it is."""
    stack: list[set | None] = []
    pending: tuple[int, str] | None = None  # a string that may be a key (a ':' follows)
    for m in _TOKEN.finditer(text, start):
        tok = m.group()
        if tok == ":":
            if pending is not None and stack and stack[-1] is not None:
                at, key = pending
                if key in stack[-1]:
                    return at, key, len(stack)
                stack[-1].add(key)
            pending = None
            continue
        pending = None
        if tok[0] == '"':
            try:
                pending = (m.start(), json.loads(tok))
            except ValueError:
                pending = None
        elif tok in "[{":
            stack.append(set() if tok == "{" else None)
        else:
            stack.pop()
            if not stack:
                return None
    return None
_DECODERS = {"utf-8": codecs.utf_8_decode, "utf-16-le": codecs.utf_16_le_decode,
             "utf-16-be": codecs.utf_16_be_decode}
_WS = re.compile(r"[ \t\n\r]*")
_STRUCTURE = re.compile(r'[][{}"]')  # outside strings
_STRING_END = re.compile(r'["\\]')  # inside strings


def size_text(chars: int) -> str:
    return f"{chars // MiB} MiB" if chars >= MiB else f"{chars} characters"


class JsonWindow:
    """The text of a binary file ``f`` (positioned after any BOM) from position ``offset`` on.

    Positions are absolute character indices into the decoded file. Methods take the position
    they parse from and never look back before it, so text before it may be dropped when the
    next chunk is read. ``largest`` is the most text held at once (for tests and benchmarks).
    """

    def __init__(self, f, encoding: str, display: str, chunk_bytes: int = CHUNK_BYTES):
        self.f, self.encoding, self.display = f, encoding, display
        self.chunk = max(1, int(chunk_bytes))
        self._decode = _DECODERS[encoding]
        self.buf, self.offset, self.eof = "", 0, False
        self._pending = b""  # bytes of a character cut by the chunk boundary
        self._bad_bytes: TailorError | None = None  # undecodable bytes after the text read
        self._line0, self._col0 = 1, 0  # line of buf[0]; characters before it on that line
        self._mark, self._mark_line = 0, 1  # last position whose line was asked (asked in order)
        self.largest = 0
        self.hold_from: int | None = None  # set: text from here on is kept

    # -- the window ----------------------------------------------------------------------------

    def _read_more(self, keep: int) -> None:
        """Drop the text before absolute position ``keep``, then append the next chunk."""
        if self.hold_from is not None:
            keep = min(keep, self.hold_from)
        cut = min(keep, self.offset + len(self.buf)) - self.offset
        if cut > 0:
            nl = self.buf.rfind("\n", 0, cut)
            if nl >= 0:
                self._line0 += self.buf.count("\n", 0, cut)
                self._col0 = cut - nl - 1
            else:
                self._col0 += cut
            self.buf, self.offset = self.buf[cut:], self.offset + cut
        if self._bad_bytes is not None:
            raise self._bad_bytes
        raw = self.f.read(self.chunk)
        data = self._pending + raw
        try:
            text, used = self._decode(data, "strict", not raw)
            self._pending, self.eof = data[used:], not raw
        except UnicodeDecodeError as e:
            # Keep the text before the bad bytes: what the parser finds there comes first, as
            # in a whole-file read; the error is raised when it reads on past it.
            text = data[:e.start].decode(self.encoding)
            line = self.line_at(self.offset + len(self.buf)) + text.count("\n")
            self._bad_bytes = TailorError(f"{self.display}:{line}: bytes that are not valid "
                                          f"{self.encoding.upper()} (0x{data[e.start]:02x})",
                                          hint="save the file as UTF-8")
        self.buf += text
        self.largest = max(self.largest, len(self.buf))

    def line_at(self, pos: int) -> int:
        """1-based line of ``pos`` (counted on from the last position asked, so linear)."""
        if not self.offset <= self._mark <= pos:
            self._mark, self._mark_line = self.offset, self._line0
        self._mark_line += self.buf.count("\n", self._mark - self.offset, pos - self.offset)
        self._mark = pos
        return self._mark_line

    def column_at(self, pos: int) -> int:
        i = pos - self.offset
        nl = self.buf.rfind("\n", 0, i)
        return i - nl if nl >= 0 else self._col0 + i + 1

    def char(self, pos: int) -> str:
        """The character at ``pos`` ('' at the end of the file)."""
        while pos - self.offset >= len(self.buf) and not self.eof:
            self._read_more(pos)
        i = pos - self.offset
        return self.buf[i] if i < len(self.buf) else ""

    def skip_ws(self, pos: int) -> int:
        """The first position at or after ``pos`` that is not JSON whitespace."""
        while True:
            i = _WS.match(self.buf, pos - self.offset).end()
            if i < len(self.buf) or self.eof:
                return i + self.offset
            pos = i + self.offset
            self._read_more(pos)

    def fail(self, pos: int, message: str) -> TailorError:
        return TailorError(f"{self.display}:{self.line_at(pos)}:{self.column_at(pos)}: "
                           f"invalid JSON: {message}")

    # -- values --------------------------------------------------------------------------------

    def value(self, start: int, cap: int, line: int) -> tuple[Any, int]:
        """(value, end) of the JSON value at ``start`` (``line`` is its line); (TOO_LONG, end)
        for an array, object or string longer than ``cap`` characters. Raises TailorError on
        invalid JSON and on a number longer than ``cap``."""
        container = self.char(start) in '[{"'
        i = start - self.offset
        try:  # fast path: the whole value is already in the window
            value, end = DECODER.raw_decode(self.buf, i)
            # A number may go on past the window ("1" + ".5", "1.5e" + "-3"): the decoder
            # looked up to two characters beyond the value, so those must be real text.
            if end + 2 < len(self.buf) or self.eof:
                return self._fits(value, i, end, cap, container, line)
        except (ValueError, RecursionError):
            pass  # cut by the window's end, or invalid: delimit it, then decide
        cut_short = False
        if container:
            end, too_long = self.value_end(start, cap, line)
            if too_long:
                return TOO_LONG, end
        else:  # a number or literal: the decoder decides within cap + 3 characters
            want = max(cap, 16) + 3
            while len(self.buf) - (start - self.offset) < want and not self.eof:
                if self._bad_bytes is not None:
                    cut_short = True  # by undecodable bytes: they are the error if it needs them
                    break
                self._read_more(start)
        i = start - self.offset
        try:
            value, end = DECODER.raw_decode(self.buf, i)
        except DuplicateKey as e:
            return self._duplicate(i, e), end
        except json.JSONDecodeError as e:
            if cut_short:
                raise self._bad_bytes from None
            raise self.fail(e.pos + self.offset, e.msg) from None
        except RecursionError:
            raise TailorError(f"{self.display}:{line}: JSON nested too deeply") from None
        except ValueError as e:  # NaN / Infinity
            raise TailorError(f"{self.display}:{line}: {e}") from None
        if not container and end + 2 >= len(self.buf) and not self.eof:
            if cut_short:
                raise self._bad_bytes
            end = i + cap + 1  # a number running on past the cap
        return self._fits(value, i, end, cap, container, line)

    def _duplicate(self, i: int, e: DuplicateKey) -> BadValue:
        found = find_duplicate_key(self.buf, i)
        at, depth = (found[0], found[2]) if found else (i, 1)
        pos = at + self.offset
        return BadValue(self.line_at(pos), self.column_at(pos), depth, str(e))

    def _fits(self, value, i: int, end: int, cap: int, container: bool, line: int):
        if end - i <= cap:
            return value, end + self.offset
        if container:
            return TOO_LONG, end + self.offset
        raise TailorError(f"{self.display}:{line}: a number longer than {size_text(cap)}")

    def value_end(self, start: int, cap: int, line: int) -> tuple[int, bool]:
        """(end, too_long): where the array, object or string at ``start`` ends by its brackets
        and quotes (not validated), reading on as needed. Past ``cap`` characters the text is
        dropped as it is scanned (``too_long``); a value that is then still open at the end of
        the file raises. Otherwise the window holds the value's text from ``start`` to ``end``
        (an unfinished one ends at the end of the file: decoding it reports where)."""
        in_string = self.char(start) == '"'
        depth = 0 if in_string else 1
        pos, too_long = start + 1, False
        while True:
            buf, off = self.buf, self.offset
            i = pos - off
            if in_string:
                m = _STRING_END.search(buf, i)
                if m is None:
                    i = len(buf)
                elif m.group() == '"':
                    in_string, pos = False, m.end() + off
                    if depth == 0:
                        return pos, too_long or pos - start > cap
                    continue
                elif m.end() < len(buf):
                    pos = m.end() + 1 + off  # skip the escaped character
                    continue
                else:
                    i = m.start()  # the escaped character is in the next chunk
            else:
                m = _STRUCTURE.search(buf, i)
                if m is None:
                    i = len(buf)
                else:
                    pos = m.end() + off
                    ch = m.group()
                    if ch == '"':
                        in_string = True
                    elif ch in "[{":
                        depth += 1
                    else:
                        depth -= 1
                        if depth == 0:
                            return pos, too_long or pos - start > cap
                    continue
            pos = i + off
            too_long = too_long or pos - start > cap
            if self.eof:
                if too_long:
                    raise TailorError(f"{self.display}:{line}: the example that starts here is "
                                      f"longer than {size_text(cap)} and not closed before "
                                      "the end of the file")
                return pos, False
            self._read_more(pos if too_long else start)

    # -- arrays and objects --------------------------------------------------------------------

    def items(self, start: int, cap: int, on_too_long: Callable[[int], None],
              tick: Callable[[], None] | None = None,
              on_bad: Callable[[BadValue], None] | None = None) -> Iterator[tuple[int, Any]]:
        """(line, value) of each element of the array at ``start``; elements over ``cap`` go
        to ``on_too_long(line)``, unusable ones (BadValue) to ``on_bad`` (or are yielded when
        it is None). Returns (StopIteration.value) the position after ']'."""
        opened = self.line_at(start)
        pos = self.skip_ws(start + 1)
        if self.char(pos) == "]":
            return pos + 1
        while True:
            if not self.char(pos):
                raise self._not_closed(opened)
            line = self.line_at(pos)
            value, end = self.value(pos, cap, line)
            if value is TOO_LONG:
                on_too_long(line)
            elif on_bad is not None and isinstance(value, BadValue):
                on_bad(value)
            else:
                yield line, value
            if tick is not None:
                tick()
            pos = self.skip_ws(end)
            c = self.char(pos)
            if c == "]":
                return pos + 1
            if not c:
                raise self._not_closed(opened)
            if c != ",":
                raise TailorError(f"{self.display}:{self.line_at(pos)}:{self.column_at(pos)}: "
                                  f"expected ',' or ']' between examples, found {c!r}")
            pos = self.skip_ws(pos + 1)

    def _not_closed(self, line: int) -> TailorError:
        return TailorError(f"{self.display}:{line}: the JSON array that starts here is not "
                           "closed (missing ']')")

    def next_member(self, pos: int, first: bool, cap: int) -> tuple[Any, int] | int:
        """In an object, from just after '{' (``first``) or after a member's value: (key,
        position of its value) of the next member, or the position after the closing '}'."""
        pos = self.skip_ws(pos)
        c = self.char(pos)
        if c == "}":
            return pos + 1
        if not first:
            if c != ",":
                raise self.fail(pos, "Expecting ',' delimiter")
            pos = self.skip_ws(pos + 1)
            c = self.char(pos)
        if c != '"':
            raise self.fail(pos, "Expecting property name enclosed in double quotes")
        key, pos = self.value(pos, cap, self.line_at(pos))
        pos = self.skip_ws(pos)
        if self.char(pos) != ":":
            raise self.fail(pos, "Expecting ':' delimiter")
        pos = self.skip_ws(pos + 1)
        if not self.char(pos):
            raise self.fail(pos, "Expecting value")
        return key, pos
