"""Structural check of a GGUF file before Tailor hands it on (Ollama upload, Modelfile folder).

A GGUF whose header lies (a truncated file, a forged count, two tensors at the same offset, data
past the end) would otherwise be uploaded and "created", or fail deep inside a reader with an
internal message. The checks follow what llama.cpp's ``gguf_init_from_file`` enforces:

- magic and version, every count and length bounded by the file size (``gguf_read``);
- tensor names unique and short, at most 4 dimensions, a shape whose element count fits;
- a known ggml type, and a row length that is a whole number of its blocks;
- ``general.alignment`` a power of two; every tensor's data aligned, inside the file and not
  overlapping another's (byte size from type and shape, gguf-py's ``GGML_QUANT_SIZES``).
"""
from __future__ import annotations

from pathlib import Path

from ..events import TailorError
from .gguf_read import GGUFFormatError, GGUFHeader, read_header

DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
_HINT = ("the file is damaged or was not written completely: export it again (`tailor export`) "
         "or download it again")


def _type_sizes() -> dict[int, tuple[str, int, int]]:
    """ggml type id -> (name, values per block, bytes per block)."""
    from gguf.constants import GGML_QUANT_SIZES

    return {int(t): (t.name, block, size) for t, (block, size) in GGML_QUANT_SIZES.items()}


def tensor_problems(header: GGUFHeader) -> list[str]:
    """What is wrong with the tensor infos of ``header`` (empty when nothing is)."""
    types = _type_sizes()
    alignment = header.kv.get("general.alignment", DEFAULT_ALIGNMENT)
    if (header.kv_types.get("general.alignment", "UINT32") != "UINT32" or not isinstance(
            alignment, int) or alignment <= 0 or alignment & (alignment - 1)):
        return [f"general.alignment is {alignment!r}; it must be a power of two (UINT32)"]
    data_start = -(-header.header_bytes // alignment) * alignment
    if header.tensors and data_start > header.file_size:
        return [f"the tensor data would start at byte {data_start}, past the end of the file "
                f"({header.file_size} bytes): it is truncated"]
    problems: list[str] = []
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []
    for t in header.tensors:
        if t.name in seen:
            problems.append(f"the tensor name {t.name!r} appears twice")
            continue
        seen.add(t.name)
        if not t.name or len(t.name.encode("utf-8")) > 63:
            problems.append(f"tensor {t.name[:80]!r} has a name of {len(t.name.encode())} bytes "
                            "(1 to 63 allowed)")
        if t.ggml_type not in types:
            problems.append(f"tensor {t.name!r} has unknown ggml type {t.ggml_type}")
            continue
        type_name, block, block_bytes = types[t.ggml_type]
        count = 1
        for d in t.shape:
            count *= d
        if count >= 1 << 63:
            problems.append(f"tensor {t.name!r} has shape {t.shape}, more elements than fit "
                            "in 64 bits")
            continue
        if t.shape and t.shape[0] % block:
            problems.append(f"tensor {t.name!r} ({type_name}) has rows of {t.shape[0]} values, "
                            f"not a multiple of its block size {block}")
            continue
        nbytes = count // block * block_bytes
        if t.offset % alignment:
            problems.append(f"tensor {t.name!r} starts at data offset {t.offset}, not a multiple "
                            f"of the alignment {alignment}")
        start = data_start + t.offset
        if start + nbytes > header.file_size:
            problems.append(f"tensor {t.name!r} ({type_name} {t.shape}, {nbytes} bytes at byte "
                            f"{start}) ends at byte {start + nbytes}, past the end of the file "
                            f"({header.file_size} bytes)")
        spans.append((start, start + nbytes, t.name))
    reach = (0, 0, "")  # the span reaching furthest so far, in order of start
    for start, end, name in sorted(s for s in spans if s[1] > s[0]):  # empty: overlaps nothing
        if start < reach[1]:
            problems.append(f"tensors {reach[2]!r} (bytes {reach[0]}-{reach[1]}) and {name!r} "
                            f"(bytes {start}-{end}) overlap: their data offsets alias each other")
        if end > reach[1]:
            reach = (start, end, name)
    return problems


def check_gguf(path: Path | str) -> GGUFHeader:
    """Validate the structure of the GGUF at ``path`` and return its header.

    Raises TailorError naming the file and the first problems found (with a hint).
    """
    path = Path(path)
    try:
        header = read_header(path)
    except GGUFFormatError as e:
        raise TailorError(f"{path} is not a valid GGUF file: {e}", hint=_HINT) from None
    except OSError as e:
        raise TailorError(f"{path} cannot be read: {e.strerror or e}") from None
    problems = tensor_problems(header)
    if problems:
        more = f" (and {len(problems) - 3} more problems)" if len(problems) > 3 else ""
        raise TailorError(f"{path} is not a valid GGUF file: {'; '.join(problems[:3])}{more}",
                          hint=_HINT)
    return header
