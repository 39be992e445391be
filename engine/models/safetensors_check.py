"""Check a safetensors file's header before anything loads it.

MLX's loader turns a truncated file or a bad header into ``RuntimeError: [load_safetensors]``,
a header length of 2^60 into an allocation attempt, and it accepts tensors whose bytes overlap
(two weights reading the same data: the model is silently wrong). Every header is checked here
first, against the file's size and the format (https://github.com/huggingface/safetensors):
an 8-byte little-endian header length, a JSON object of ``name -> {dtype, shape,
data_offsets}`` (plus an optional ``__metadata__`` str -> str map), offsets relative to the
data section, each tensor's byte count equal to its shape times its item size, and no two
tensors sharing a byte. Only the header is read, so this costs milliseconds for any model.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from ..events import TailorError

# Bits per element of every dtype the format defines.
DTYPE_BITS = {"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
              "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
              "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6}
# The reference implementation refuses headers over 100 MB; real ones are well under 1 MB.
MAX_HEADER_BYTES = 100_000_000
HINT = "the file is damaged or incomplete; download or copy the model again"
ADAPTER_HINT = ("the adapter file is damaged or incomplete; resume from a checkpoint "
                "(tailor train --resume NAME), train it again, or restore it from a backup")


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offset in the data section
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    header_bytes: int  # the length field's value
    tensors: dict[str, TensorEntry]
    metadata: dict[str, str]

    @property
    def data_start(self) -> int:
        return 8 + self.header_bytes


def _fail(path: Path, problem: str, hint: str = HINT) -> TailorError:
    return TailorError(f"{path} is not a valid safetensors file: {problem}", hint=hint)


def _no_duplicates(pairs):
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


def _no_constants(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path: Path | str, hint: str = HINT) -> SafetensorsHeader:
    """The checked header of the safetensors file ``path``; TailorError naming the file and
    the problem (with ``hint``) when anything is off."""
    path = Path(path)

    def fail(problem: str) -> TailorError:
        return _fail(path, problem, hint)

    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(8)
            if len(head) < 8:
                raise fail(f"it is {size} bytes long, shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise fail(f"the header length says {n} bytes, but only {size - 8} follow "
                           "(the file is truncated or not safetensors)")
            if n > MAX_HEADER_BYTES:
                raise fail(f"the header length is {n} bytes, over the "
                           f"{MAX_HEADER_BYTES // 1_000_000} MB limit")
            raw = f.read(n)
    except OSError as e:
        raise TailorError(f"{path} cannot be read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                            parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise fail("the header is not UTF-8 text") from None
    except ValueError as e:  # JSONDecodeError is a ValueError; so are the hooks' refusals
        raise fail(f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise fail(f"the header is a JSON {type(header).__name__}, not an object")
    data_bytes = size - 8 - n
    metadata = header.pop("__metadata__", None) or {}  # MLX writes null when there is none
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise fail("__metadata__ is not a map of strings to strings")
    tensors: dict[str, TensorEntry] = {}
    for name, entry in header.items():
        try:
            tensors[name] = _entry(name, entry, data_bytes)
        except _Bad as e:
            raise fail(str(e)) from None
    spans = sorted((t.begin, t.end, t.name) for t in tensors.values() if t.end > t.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise fail(f"tensors {n0!r} (bytes {b0}-{e0}) and {n1!r} (bytes {b1}-{e1}) overlap")
    return SafetensorsHeader(path, n, tensors, metadata)


class _Bad(ValueError):
    """A problem with one header entry (the caller names the file)."""


def _entry(name: str, entry, data_bytes: int) -> TensorEntry:
    where = f"tensor {name!r}"
    if not name:
        raise _Bad("a tensor has an empty name")
    if not isinstance(entry, dict):
        raise _Bad(f"{where} is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise _Bad(f"{where} has an unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise _Bad(f"{where} has the shape {shape!r}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise _Bad(f"{where} has data_offsets {offsets!r}, not [begin, end]")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise _Bad(f"{where} has data_offsets [{begin}, {end}]: begin must be between 0 and end")
    if end > data_bytes:
        raise _Bad(f"{where} ends at byte {end} of a data section of {data_bytes} bytes "
                   "(the file is truncated)")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise _Bad(f"{where} is {dtype} {shape} ({bits / 8:g} bytes) but its data_offsets "
                   f"span {end - begin} bytes")
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def check_weight_files(files: list[Path],
                       index_files: list[Path] = ()) -> dict[Path, SafetensorsHeader]:
    """Check every file's header and, for a sharded model, that each index file's weight_map
    names exactly the tensors of the shards it lists. -> {file: header}."""
    headers = {Path(f): read_header(f) for f in files}
    by_name = {p.name: h for p, h in headers.items()}
    for index in index_files:
        _check_index(Path(index), by_name)
    return headers


def _check_index(index: Path, by_name: dict[str, SafetensorsHeader]) -> None:
    try:
        data = json.loads(index.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TailorError(f"{index} is not a valid safetensors index: {e}", hint=HINT) from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise TailorError(f"{index} is not a valid safetensors index: weight_map is not a map "
                          "of tensor names to file names", hint=HINT)
    for shard in sorted(set(weight_map.values())):
        if shard not in by_name:
            raise TailorError(f"{index} lists the shard {shard}, which is not in the folder",
                              hint=HINT)
    listed = set(weight_map)
    present = {n for shard in set(weight_map.values()) for n in by_name[shard].tensors}
    for name, shard in sorted(weight_map.items()):
        if name not in by_name[shard].tensors:
            where = next((s for s, h in by_name.items() if name in h.tensors), None)
            raise TailorError(f"{index} puts the tensor {name!r} in {shard}, but "
                              + (f"it is in {where}" if where else "no shard holds it"),
                              hint=HINT)
    extra = sorted(present - listed)
    if extra:
        raise TailorError(f"{index} does not list the tensor {extra[0]!r}"
                          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
                          + " that its shards hold", hint=HINT)


def check_model_weights(folder: Path | str) -> dict[Path, SafetensorsHeader]:
    """Check every readable ``*.safetensors`` of the model folder and its
    ``*.safetensors.index.json`` (see engine/models/folder_files.py for "readable")."""
    from .folder_files import model_files

    files = model_files(folder)
    return check_weight_files(files.glob("*.safetensors"),
                              files.glob("*.safetensors.index.json"))


def check_adapter_file(path: Path | str) -> SafetensorsHeader:
    """Check an ``adapters.safetensors`` (library adapter or checkpoint) before it loads."""
    return read_header(path, ADAPTER_HINT)
