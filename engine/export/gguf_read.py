"""A fast GGUF header reader for verification: metadata and tensor infos, no tensor data.

gguf-py's GGUFReader builds numpy views for every array element (10 s for a 150k-token
vocabulary); this reads the same header with one pass of `struct` over the bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# GGUF value types
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
STRING, ARRAY = 8, 9
_U64 = struct.Struct("<Q")
TYPE_NAMES = {0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32",
              6: "FLOAT32", 7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64",
              12: "FLOAT64"}


@dataclass
class GGUFTensorInfo:
    name: str
    shape: list[int]  # GGML order (innermost first)
    ggml_type: int
    offset: int


@dataclass
class GGUFHeader:
    version: int
    kv: dict[str, Any]
    kv_types: dict[str, str]  # "UINT32", "ARRAY[INT32]", ...
    tensors: list[GGUFTensorInfo]


class _Buf:
    def __init__(self, f):
        self.f = f
        self.data = b""
        self.pos = 0

    def need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            more = self.f.read(max(n, 1 << 22))
            self.data = self.data[self.pos:] + more
            self.pos = 0
            if len(self.data) < n:
                raise ValueError("truncated GGUF header")

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        self.need(size)
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return v[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        self.need(n)
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        return s.decode("utf-8", errors="replace")


def _value(b: _Buf, vtype: int):
    if vtype in _SCALARS:
        return b.unpack(_SCALARS[vtype]), TYPE_NAMES[vtype]
    if vtype == STRING:
        return b.string(), "STRING"
    if vtype == ARRAY:
        sub = b.unpack("<I")
        n = b.unpack("<Q")
        if sub in _SCALARS:
            fmt = _SCALARS[sub]
            size = struct.calcsize(fmt) * n
            b.need(size)
            vals = list(struct.unpack_from(f"<{n}{fmt[1]}", b.data, b.pos))
            b.pos += size
        elif sub == STRING:
            vals = _strings(b, n)
        else:
            vals = [_value(b, sub)[0] for _ in range(n)]
        return vals, f"ARRAY[{TYPE_NAMES.get(sub, sub)}]"
    raise ValueError(f"unknown GGUF value type {vtype}")


def _strings(b: _Buf, n: int) -> list[str]:
    """n strings in a row: the loop of `_Buf.string` inlined (a vocabulary has 150k+)."""
    vals = []
    data, pos, unpack = b.data, b.pos, _U64.unpack_from
    for _ in range(n):
        if pos + 8 > len(data):
            b.pos = pos
            b.need(8)
            data, pos = b.data, b.pos
        (size,) = unpack(data, pos)
        pos += 8
        if pos + size > len(data):
            b.pos = pos
            b.need(size)
            data, pos = b.data, b.pos
        vals.append(data[pos:pos + size].decode("utf-8", errors="replace"))
        pos += size
    b.pos = pos
    return vals


def read_header(path: Path | str) -> GGUFHeader:
    with open(path, "rb") as f:
        b = _Buf(f)
        if b.unpack("<I") != 0x46554747:
            raise ValueError(f"{path} is not a GGUF file")
        version = b.unpack("<I")
        n_tensors, n_kv = b.unpack("<Q"), b.unpack("<Q")
        kv, kv_types = {}, {}
        for _ in range(n_kv):
            key = b.string()
            kv[key], kv_types[key] = _value(b, b.unpack("<I"))
        tensors = []
        for _ in range(n_tensors):
            name = b.string()
            dims = [b.unpack("<Q") for _ in range(b.unpack("<I"))]
            tensors.append(GGUFTensorInfo(name, dims, b.unpack("<I"), b.unpack("<Q")))
    return GGUFHeader(version, kv, kv_types, tensors)
