"""A fast GGUF header reader for verification: metadata and tensor infos, no tensor data.

gguf-py's GGUFReader builds numpy views for every array element (10 s for a 150k-token
vocabulary); this reads the same header with one pass of `struct` over the bytes.

Every count and length is checked against the bytes left in the file before anything is read
or allocated, so a corrupt or hostile header is a ``GGUFFormatError`` naming the byte offset,
never a huge allocation. ``engine.export.gguf_check`` adds the tensor-level checks.
"""
from __future__ import annotations

import os
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
GGUF_MAGIC = 0x46554747  # b"GGUF" little-endian
SUPPORTED_VERSIONS = (2, 3)  # v1 had 32-bit counts; llama.cpp and Ollama read v2 and v3
# Sanity limits far above any real model (vocabularies are ~260k tokens, models < 100k tensors,
# chat templates < 1 MB), so that a forged count fails here instead of exhausting memory.
MAX_STRING_BYTES = 64 << 20
MAX_ARRAY_ITEMS = 1 << 24
MAX_KV = 1 << 20
MAX_TENSORS = 1 << 20
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME is 64 with the terminating NUL


class GGUFFormatError(ValueError):
    """The file is not a well-formed GGUF; the message says what is wrong and where."""


@dataclass
class GGUFTensorInfo:
    name: str
    shape: list[int]  # GGML order (innermost first)
    ggml_type: int
    offset: int  # relative to the start of the data section


@dataclass
class GGUFHeader:
    version: int
    kv: dict[str, Any]
    kv_types: dict[str, str]  # "UINT32", "ARRAY[INT32]", ...
    tensors: list[GGUFTensorInfo]
    header_bytes: int = 0  # where the tensor infos end (the data section starts aligned after)
    file_size: int = 0


class _Buf:
    def __init__(self, f, size: int):
        self.f = f
        self.size = size  # bytes in the file
        self.data = b""
        self.pos = 0
        self.base = 0  # file offset of data[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def need(self, n: int, what: str = "") -> None:
        if self.pos + n > len(self.data):
            if self.offset + n > self.size:
                raise GGUFFormatError(
                    f"truncated: {what or 'the header'} needs {n} bytes at offset {self.offset} "
                    f"but the file ends at {self.size}")
            have = len(self.data) - self.pos
            more = self.f.read(max(n - have, 1 << 22))
            self.base += self.pos
            self.data = self.data[self.pos:] + more
            self.pos = 0
            if len(self.data) < n:
                raise GGUFFormatError(f"truncated: {what or 'the header'} at offset "
                                      f"{self.offset} (the file shrank while being read)")

    def unpack(self, fmt: str, what: str = ""):
        size = struct.calcsize(fmt)
        self.need(size, what)
        v = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return v[0]

    def length(self, n: int, what: str, limit: int, unit: int = 1) -> int:
        """``n`` checked against ``limit`` and the bytes left (``unit`` bytes per item at least)."""
        left = self.size - self.offset
        if n > limit or n * unit > left:
            raise GGUFFormatError(f"{what} at offset {self.offset} is {n}, more than "
                                  + (f"the {left} bytes left in the file (it is truncated "
                                     "or its header is corrupt)" if n * unit > left
                                     else f"any real GGUF has ({limit})"))
        return n

    def string(self, what: str = "a string") -> str:
        start = self.offset
        n = self.length(self.unpack("<Q", what), f"the length of {what}", MAX_STRING_BYTES)
        self.need(n, what)
        s = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return s.decode("utf-8")
        except UnicodeDecodeError:
            if what.startswith(("the key", "the name")):
                raise GGUFFormatError(f"{what} at offset {start} is not UTF-8") from None
            return s.decode("utf-8", errors="replace")


def _value(b: _Buf, vtype: int, what: str):
    if vtype in _SCALARS:
        return b.unpack(_SCALARS[vtype], what), TYPE_NAMES[vtype]
    if vtype == STRING:
        return b.string(what), "STRING"
    if vtype == ARRAY:
        sub = b.unpack("<I", what)
        if sub not in TYPE_NAMES:
            raise GGUFFormatError(f"{what} is an array of unknown value type {sub} (offset "
                                  f"{b.offset - 4})")
        unit = struct.calcsize(_SCALARS[sub]) if sub in _SCALARS else (8 if sub == STRING else 12)
        n = b.length(b.unpack("<Q", what), f"the item count of {what}", MAX_ARRAY_ITEMS, unit)
        if sub in _SCALARS:
            fmt = _SCALARS[sub]
            size = struct.calcsize(fmt) * n
            b.need(size, what)
            vals = list(struct.unpack_from(f"<{n}{fmt[1]}", b.data, b.pos))
            b.pos += size
        elif sub == STRING:
            vals = _strings(b, n, what)
        else:
            vals = [_value(b, sub, f"{what}[{i}]")[0] for i in range(n)]
        return vals, f"ARRAY[{TYPE_NAMES.get(sub, sub)}]"
    raise GGUFFormatError(f"{what} has unknown value type {vtype} (offset {b.offset - 4})")


def _strings(b: _Buf, n: int, what: str) -> list[str]:
    """n strings in a row: the loop of `_Buf.string` inlined (a vocabulary has 150k+)."""
    vals = []
    data, pos, unpack = b.data, b.pos, _U64.unpack_from
    for i in range(n):
        if pos + 8 > len(data):
            b.pos = pos
            b.need(8, f"{what}[{i}]")
            data, pos = b.data, b.pos
        (size,) = unpack(data, pos)
        pos += 8
        if pos + size > len(data):
            b.pos = pos
            b.length(size, f"the length of {what}[{i}]", MAX_STRING_BYTES)
            b.need(size, f"{what}[{i}]")
            data, pos = b.data, b.pos
        vals.append(data[pos:pos + size].decode("utf-8", errors="replace"))
        pos += size
    b.pos = pos
    return vals


def read_header(path: Path | str) -> GGUFHeader:
    """The metadata and tensor infos of the GGUF at ``path``.

    Raises GGUFFormatError (a ValueError) when the header is malformed, OSError when the file
    cannot be read.
    """
    with open(path, "rb") as f:
        b = _Buf(f, os.fstat(f.fileno()).st_size)
        if b.size < 4 or b.unpack("<I", "the magic") != GGUF_MAGIC:
            raise GGUFFormatError("it does not start with the GGUF magic bytes (not a GGUF file)")
        version = b.unpack("<I", "the version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            raise GGUFFormatError(
                f"GGUF version {swapped} in big-endian byte order is not supported"
                if swapped in SUPPORTED_VERSIONS else
                f"GGUF version {version} is not supported (only versions 2 and 3)")
        # the smallest metadata entry is 13 bytes, the smallest tensor info 24
        n_tensors = b.length(b.unpack("<Q", "the tensor count"), "the tensor count",
                             MAX_TENSORS, 24)
        n_kv = b.length(b.unpack("<Q", "the metadata count"), "the metadata count", MAX_KV, 13)
        kv, kv_types = {}, {}
        for i in range(n_kv):
            key = b.string(f"the key of metadata entry {i}")
            if key in kv:
                raise GGUFFormatError(f"the metadata key {key!r} appears twice")
            kv[key], kv_types[key] = _value(b, b.unpack("<I", f"the type of {key}"), key)
        tensors = []
        for i in range(n_tensors):
            name = b.string(f"the name of tensor {i}")
            n_dims = b.unpack("<I", f"the dimension count of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise GGUFFormatError(f"tensor {name!r} has {n_dims} dimensions (at most "
                                      f"{MAX_DIMS})")
            dims = [b.unpack("<Q", f"the shape of tensor {name!r}") for _ in range(n_dims)]
            tensors.append(GGUFTensorInfo(name, dims, b.unpack("<I", f"the type of {name!r}"),
                                          b.unpack("<Q", f"the offset of {name!r}")))
        end = b.offset
    return GGUFHeader(version, kv, kv_types, tensors, header_bytes=end, file_size=b.size)
