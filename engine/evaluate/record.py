"""Evaluation reports kept in the adapter's record: ``<adapter>/evaluations/<id>.json``.

Every evaluation is kept (one file each, never rewritten), so a report always describes the
adapter it was made on: its weights' sha256, the base's and the data's hashes, the settings,
seed and versions are in it. One file per report rather than a list in manifest.json: a
training run rewrites the manifest at every checkpoint, and nothing else in the folder
changes when a report is added. The files travel with the adapter (rename, duplicate).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..atomic import write_json_atomic
from ..events import TailorError
from ..results import EvalReport

EVALUATIONS = "evaluations"
ADAPTER_FILES = ("adapters.safetensors", "adapter_config.json")


def adapter_fingerprint(folder: Path) -> str:
    """sha256 over the adapter's weights and config (what evaluation ran on)."""
    h = hashlib.sha256()
    for name in ADAPTER_FILES:
        p = Path(folder) / name
        h.update(f"{name}\0".encode())
        if p.exists():
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def new_report_id(now: float | None = None) -> str:
    """A name that sorts by time and never repeats: 20261201-231500-<6 hex>."""
    now = time.time() if now is None else now
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + os.urandom(3).hex()


def save_report(adapter_dir: Path, report: EvalReport) -> Path:
    """Write ``report`` as a new file in the adapter's evaluations folder (atomically; an
    existing report is never replaced) and set its ``id`` and ``path``; -> the file."""
    report.id = report.id or new_report_id(report.created or None)
    target = Path(adapter_dir) / EVALUATIONS / f"{report.id}.json"
    report.path = str(target)
    write_json_atomic(target, report.to_dict(), overwrite=False)
    return target


def load_reports(adapter_dir: Path) -> tuple[list[EvalReport], list[str]]:
    """(every readable report, oldest first; a line per unreadable file)."""
    folder = Path(adapter_dir) / EVALUATIONS
    reports, problems = [], []
    for f in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if f.name.startswith("."):
            continue
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("type") != EvalReport.tag:
                raise ValueError("not an evaluation report")
            report = EvalReport.from_dict(data)
        except (OSError, ValueError, TypeError) as e:
            problems.append(f"{f}: unreadable evaluation report ({e})")
            continue
        report.path = str(f)
        reports.append(report)
    reports.sort(key=lambda r: (r.created, r.id))
    return reports, problems


def latest_report(adapter_dir: Path) -> EvalReport | None:
    reports, _ = load_reports(adapter_dir)
    return reports[-1] if reports else None


def check_markdown_target(path: Path) -> Path:
    """Refuse a --markdown file that exists (a user's file is never overwritten) or whose
    folder does not, before any work is done."""
    path = Path(path).expanduser()
    if path.exists():
        raise TailorError(f"{path} already exists; it was left untouched",
                          hint="choose another file name for the report")
    if not path.parent.is_dir():
        raise TailorError(f"{path.parent}: no such folder for the report")
    return path
