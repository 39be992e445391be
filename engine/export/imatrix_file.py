"""Importance matrices as llama.cpp's tools keep them: the imatrix GGUF that ``llama-imatrix``
writes today (and ``llama-quantize --imatrix`` reads), and the legacy ``.dat`` file it wrote
before.

The GGUF (llama.cpp tools/imatrix/imatrix.cpp ``save_imatrix``): ``general.type`` =
``imatrix``, ``imatrix.datasets`` (strings), ``imatrix.chunk_count`` and
``imatrix.chunk_size`` (u32); for every matrix, in name order, ``<tensor>.in_sum2`` (F32,
ne = [n_cols, n_mat]: the sum over tokens of each input column's squared activation, per
expert for a stacked ``*_exps`` tensor) and ``<tensor>.counts`` (F32, ne = [1, n_mat]: the
tokens summed, per expert). The legacy file holds sum / count x ncall per entry and ncall.

What the encoders take (``Imatrix.weights()``) is what llama-quantize's ``load_imatrix``
passes on: sums / count in float32 per expert, 1.0 for an expert no token reached.
Every file given is hostile input: read bounds-checked, refused with a TailorError naming
the file and the entry, never a traceback.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..events import ErrorCode, TailorError

IMATRIX_TYPE = "imatrix"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUMS, COUNTS = ".in_sum2", ".counts"
# A legacy entry's name longer than this is a damaged or foreign file (tensor names are short).
MAX_NAME_BYTES = 4096

_HINT = ("give a matrix written by `llama-imatrix` or by `tailor export --imatrix auto` "
         "for this model, or use --imatrix auto to compute one")


@dataclass
class Imatrix:
    """An importance matrix: per GGUF tensor name, the flat float32 sums of squared
    activations (n_mat x n_cols, expert-major) and the tokens counted per matrix."""

    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]  # float64 [n_mat]; legacy: [ncall]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    legacy: bool = False  # a .dat file: sums hold sum / count x ncall, counts [ncall]

    def weights(self) -> dict[str, np.ndarray]:
        """GGUF tensor name -> float32 weights per input column, as llama-quantize computes
        them from the file: [n_cols] for a plain matrix, [n_expert, n_cols] for stacked
        experts (a legacy file's flat values / ncall, flat)."""
        out = {}
        for name, sums in self.sums.items():
            counts = self.counts[name]
            if self.legacy:
                ncall = float(counts[0]) if counts.size else 0.0
                out[name] = (sums / np.float32(ncall) if ncall > 0 else sums).astype(np.float32)
                continue
            w = sums.reshape(counts.size, -1).astype(np.float32)
            c = counts.astype(np.float32)[:, None]
            w = np.where(c > 0, w / np.where(c > 0, c, np.float32(1)), np.float32(1.0))
            out[name] = w[0] if counts.size == 1 else w
        return out

    def entries(self) -> int:
        return len(self.sums)


def save_imatrix(imatrix: Imatrix, path: Path | str, *, overwrite: bool = False) -> Path:
    """Write ``imatrix`` as llama.cpp's imatrix GGUF at ``path`` (atomically: a temporary
    beside it, renamed; an existing file is refused unless ``overwrite``)."""
    import gguf

    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch=IMATRIX_TYPE)
        w.kv_data[0].pop(gguf.Keys.General.ARCHITECTURE, None)  # llama-imatrix writes none
        w.add_type(gguf.GGUFType.IMATRIX)
        w.add_array(KEY_DATASETS, list(imatrix.datasets))
        w.add_uint32(KEY_CHUNK_COUNT, int(imatrix.chunk_count))
        w.add_uint32(KEY_CHUNK_SIZE, int(imatrix.chunk_size))
        for name in sorted(imatrix.sums):  # llama-imatrix: deterministic name order
            counts = np.asarray(imatrix.counts[name], dtype=np.float32).reshape(-1)
            sums = np.asarray(imatrix.sums[name], dtype=np.float32).reshape(counts.size, -1)
            w.add_tensor(name + SUMS, sums)
            w.add_tensor(name + COUNTS, counts.reshape(counts.size, 1))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return path


def load_imatrix(path: Path | str) -> Imatrix:
    """Read an imatrix GGUF or a legacy ``.dat`` file; TailorError naming the file (and the
    entry) for a missing, foreign, truncated or inconsistent one."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TailorError(f"importance matrix not found: {path}", hint=_HINT,
                          code=ErrorCode.BAD_INPUT)
    if not path.is_file():
        raise TailorError(f"{path} is a folder, not an importance matrix file", hint=_HINT)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise TailorError(f"{path} cannot be read: {e.strerror or e}", hint=_HINT) from e
    if magic == b"GGUF":
        return _load_gguf(path)
    return _load_legacy(path)


def _load_gguf(path: Path) -> Imatrix:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error,
            OSError) as e:
        raise TailorError(f"{path} is not a readable GGUF file (truncated or damaged: {e})",
                          hint=_HINT) from e
    kind = _string_field(reader, gguf.Keys.General.TYPE)
    if kind is not None and kind != IMATRIX_TYPE:
        raise TailorError(f"{path} is a GGUF of type {kind!r}, not an importance matrix "
                          f"(general.type {IMATRIX_TYPE!r})", hint=_HINT)
    missing = [k for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE)
               if k not in reader.fields]
    if missing:  # llama-quantize refuses it too ("missing imatrix metadata")
        raise TailorError(f"{path} lacks the imatrix metadata {', '.join(missing)}, so "
                          "llama.cpp would not read it either", hint=_HINT)
    tensors = {t.name: t for t in reader.tensors}
    names = sorted({n[:-len(SUMS)] for n in tensors if n.endswith(SUMS)}
                   | {n[:-len(COUNTS)] for n in tensors if n.endswith(COUNTS)})
    if not names:
        raise TailorError(f"{path} holds no importance matrix entries (no *.in_sum2 tensors)",
                          hint=_HINT)
    sums, counts = {}, {}
    for name in names:
        sums[name], counts[name] = _gguf_entry(path, name, tensors, gguf)
    datasets_field = reader.fields[KEY_DATASETS]
    datasets = [bytes(datasets_field.parts[i]).decode("utf-8", "replace")
                for i in datasets_field.data]
    return Imatrix(sums, counts, datasets, _int_field(reader, KEY_CHUNK_COUNT),
                   _int_field(reader, KEY_CHUNK_SIZE))


def _gguf_entry(path: Path, name: str, tensors: dict, gguf) -> tuple[np.ndarray, np.ndarray]:
    s, c = tensors.get(name + SUMS), tensors.get(name + COUNTS)
    if s is None or c is None:
        raise TailorError(f"{path}: entry {name} has {'no sums' if s is None else 'no counts'} "
                          f"({name}{SUMS if s is None else COUNTS} is missing)", hint=_HINT)
    for t in (s, c):
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise TailorError(f"{path}: {t.name} is {t.tensor_type.name}; llama.cpp reads "
                              "imatrix sums and counts as F32 only", hint=_HINT)
    sums = np.asarray(s.data, dtype=np.float32).reshape(-1).copy()
    cnt = np.asarray(c.data, dtype=np.float32).reshape(-1).astype(np.float64)
    if cnt.size == 0 or sums.size == 0 or sums.size % cnt.size:
        raise TailorError(f"{path}: entry {name} has {sums.size} sums for {cnt.size} counts "
                          "(the sums must divide evenly among the counts)", hint=_HINT)
    if not np.all(np.isfinite(sums)) or not np.all(np.isfinite(cnt)) or np.any(cnt < 0):
        raise TailorError(f"{path}: entry {name} holds non-finite or negative values "
                          "(llama.cpp refuses such a matrix)", hint=_HINT)
    return sums, np.rint(cnt)  # llama.cpp rounds the counts (std::lround)


def _string_field(reader, key: str) -> str | None:
    f = reader.fields.get(key)
    if f is None or not f.data:
        return None
    return bytes(f.parts[f.data[0]]).decode("utf-8", "replace")


def _int_field(reader, key: str) -> int:
    f = reader.fields[key]
    try:
        return int(f.parts[f.data[0]][0])
    except (IndexError, TypeError, ValueError):
        return 0


class _Cursor:
    """Bounds-checked little-endian reads from a legacy file's bytes."""

    def __init__(self, path: Path, data: bytes):
        self.path, self.data, self.pos = path, data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise TailorError(f"{self.path} is truncated or not an importance matrix: "
                              f"{what} runs past the end of the file (byte {self.pos})",
                              hint=_HINT)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self, what: str) -> int:
        return struct.unpack("<i", self.take(4, what))[0]

    def left(self) -> int:
        return len(self.data) - self.pos


def _load_legacy(path: Path) -> Imatrix:
    """The pre-GGUF format (imatrix.cpp save_imatrix_legacy): n_entries, then per entry
    name length, name, ncall, nval and nval floats; optionally chunk count and dataset."""
    cur = _Cursor(path, path.read_bytes())
    n_entries = cur.int32("the entry count") if cur.left() >= 4 else 0
    if n_entries < 1 or n_entries > cur.left() // 16:
        raise TailorError(f"{path} is neither an imatrix GGUF nor a legacy imatrix .dat file",
                          hint=_HINT)
    sums, counts = {}, {}
    for i in range(n_entries):
        length = cur.int32(f"entry {i + 1}'s name length")
        if not 0 < length <= MAX_NAME_BYTES:
            raise TailorError(f"{path}: entry {i + 1} has a name of {length} bytes; this is "
                              "not an importance matrix file", hint=_HINT)
        try:
            name = cur.take(length, f"entry {i + 1}'s name").decode("utf-8")
        except UnicodeDecodeError as e:
            raise TailorError(f"{path}: entry {i + 1}'s name is not text; this is not an "
                              "importance matrix file", hint=_HINT) from e
        ncall = cur.int32(f"{name}'s call count")
        nval = cur.int32(f"{name}'s value count")
        if nval < 1:
            raise TailorError(f"{path}: entry {name} has {nval} values", hint=_HINT)
        values = np.frombuffer(cur.take(4 * nval, f"{name}'s values"), dtype="<f4")
        if not np.all(np.isfinite(values)):
            raise TailorError(f"{path}: entry {name} holds non-finite values (llama.cpp "
                              "refuses such a matrix)", hint=_HINT)
        sums[name] = values.astype(np.float32)
        counts[name] = np.array([float(ncall)])
    chunks, datasets = 0, []
    if cur.left() >= 4:  # optional trailer: chunk count, then the dataset's name
        chunks = cur.int32("the chunk count")
        if cur.left() >= 4:
            length = cur.int32("the dataset name's length")
            if 0 < length <= min(cur.left(), MAX_NAME_BYTES):
                datasets.append(cur.take(length, "the dataset name").decode("utf-8", "replace"))
    return Imatrix(sums, counts, datasets, max(0, chunks), 0, legacy=True)


def check_imatrix(imatrix: Imatrix, path: Path | str, shapes: dict[str, tuple[int, ...]]) -> int:
    """Check ``imatrix`` (read from ``path``) against the model's GGUF tensors
    (``shapes``: name -> numpy shape, [experts,] rows, cols). Every entry naming a tensor
    must hold n_cols (x n_expert) values, as llama-quantize requires; entries naming no
    tensor are ignored (as llama.cpp does) but at least one must match. -> entries matched."""
    matched = 0
    for name, sums in imatrix.sums.items():
        shape = shapes.get(name)
        if shape is None:
            continue
        n_mat = shape[0] if len(shape) == 3 else 1
        if sums.size != n_mat * shape[-1]:
            per = f"{n_mat} experts x {shape[-1]} columns" if n_mat > 1 else \
                f"{shape[-1]} columns"
            raise TailorError(f"{path}: the matrix for {name} has {sums.size} values; the "
                              f"model's {name} has {per} = {n_mat * shape[-1]}", hint="this "
                              "matrix was computed for another model; " + _HINT)
        counts = imatrix.counts[name]
        if not imatrix.legacy and counts.size not in (1, n_mat):
            raise TailorError(f"{path}: the matrix for {name} counts {counts.size} experts; "
                              f"the model's {name} has {n_mat}", hint="this matrix was "
                              "computed for another model; " + _HINT)
        matched += 1
    if not matched:
        some = ", ".join(sorted(imatrix.sums)[:3])
        raise TailorError(f"{path}: none of its {imatrix.entries()} entries ({some}, ...) names "
                          "a tensor of this model", hint="this matrix was computed for another "
                          "model; " + _HINT)
    return matched
