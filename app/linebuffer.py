"""Split a byte stream into complete lines, keeping a partial last line for the next read.

QProcess hands us whatever bytes the pipe had; a JSON record can be cut anywhere (even inside
a multi-byte UTF-8 character). Vorta lost such split records; we keep the tail until its
newline arrives.
"""
from __future__ import annotations


class LineBuffer:
    """Feed bytes in arbitrary chunks; get back complete lines (decoded UTF-8, no newline)."""

    def __init__(self, max_line_bytes: int = 64 << 20):
        self._tail = bytearray()
        self.max_line_bytes = max_line_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """Add ``chunk``; return every line it completed, in order."""
        if not chunk:
            return []
        self._tail += chunk
        if b"\n" not in chunk:
            if len(self._tail) > self.max_line_bytes:
                # A runaway line would eat memory; hand it on as it is rather than grow forever.
                return [self._take(len(self._tail))]
            return []
        cut = self._tail.rfind(b"\n")
        block = bytes(self._tail[:cut])
        del self._tail[:cut + 1]
        return [_decode(line) for line in block.split(b"\n")]

    def flush(self) -> list[str]:
        """The unterminated last line, if any (call when the stream has ended)."""
        if not self._tail:
            return []
        return [self._take(len(self._tail))]

    @property
    def pending(self) -> int:
        return len(self._tail)

    def _take(self, n: int) -> str:
        line = bytes(self._tail[:n])
        del self._tail[:n]
        return _decode(line)


def _decode(raw: bytes) -> str:
    return raw.rstrip(b"\r").decode("utf-8", errors="replace")
