"""The GGUF files exported from an adapter, wherever they were written: ``exports.json`` in
the adapter's folder, beside the manifest.

A file of its own rather than a list in manifest.json: a training run rewrites the manifest at
every checkpoint, and an export must never touch the adapter's weights or manifest. The list
travels with the folder (rename, duplicate), so shipped-file parity (engine/evaluate/parity.py)
finds a GGUF exported to any folder. Each entry keeps the file's size and modification time as
exported, so a file replaced since (another export to the same path) is told apart. Entries
whose file is gone are left out when the list is read, and dropped when it is next written.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from . import locks
from .atomic import write_json_atomic

EXPORTS_FILE = "exports.json"
SCHEMA = "tailor.exports/1"


def _read(adapter_dir: Path) -> list[dict]:
    try:
        data = json.loads((Path(adapter_dir) / EXPORTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # none yet, or unreadable: an export list is a convenience, never a failure
    entries = data.get("exports") if isinstance(data, dict) else None
    return [e for e in entries or [] if isinstance(e, dict) and isinstance(e.get("path"), str)]


def _exists(entry: dict) -> bool:
    return Path(entry["path"]).is_file()


def record_export(adapter_dir: Path | str, gguf: Path | str, *, quant: str, kind: str,
                  job: str = "", seconds: float | None = None, quality: dict | None = None,
                  imatrix: str = "") -> Path:
    """Add ``gguf`` (just written from the adapter at ``adapter_dir``) to its exports list,
    atomically and under the adapter's lock (re-entrant: an export holds it already); an entry
    for the same path is replaced, entries whose file is gone are dropped. ``seconds``: how
    long the export took; ``quality``: its ExportQuality record (engine/export/quality.py);
    ``imatrix``: the importance matrix it was quantized with ("" none). -> the list file."""
    adapter_dir = Path(adapter_dir)
    gguf = Path(gguf).expanduser().resolve()
    st = gguf.stat()
    entry = {"path": str(gguf), "quant": quant, "kind": kind, "size": st.st_size,
             "mtime_ns": st.st_mtime_ns, "exported": time.time(), "seconds": seconds,
             "quality": quality, "imatrix": imatrix}
    with locks.adapter_lock(adapter_dir.name, job, adapter_dir.parent, reentrant=True):
        kept = [e for e in _read(adapter_dir) if e["path"] != entry["path"] and _exists(e)]
        return write_json_atomic(adapter_dir / EXPORTS_FILE,
                                 {"schema": SCHEMA, "exports": [*kept, entry]})


def listed_exports(adapter_dir: Path | str) -> list[dict]:
    """The entries of the adapter's exports list whose file still exists, oldest first; each
    has ``path``, ``quant``, ``kind`` ("model" or "adapter"), ``size``, ``mtime_ns`` and
    ``changed`` (True when the file's size or time differ from the export's: replaced since)."""
    out = []
    for e in _read(Path(adapter_dir)):
        try:
            st = Path(e["path"]).stat()
        except OSError:
            continue  # moved or deleted since: pruned
        e = dict(e, changed=(st.st_size, st.st_mtime_ns) != (e.get("size"), e.get("mtime_ns")))
        out.append(e)
    return out


def listed_export_records(adapter_dir: Path | str) -> list:
    """``listed_exports`` as typed ListedExport records (engine/results.py), oldest first:
    what the Export page's table and `tailor library show` list."""
    from .results import ListedExport

    return [ListedExport.coerce(e) for e in listed_exports(adapter_dir)]
