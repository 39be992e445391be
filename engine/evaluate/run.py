"""One `tailor eval`: held-out evaluation, then (optionally) the forgetting probe and
shipped-file parity, kept as one report in the adapter's record and, on request, written as
a Markdown reproducibility report.

The library changes by exactly one new file, ``<adapter>/evaluations/<id>.json``, written
only once everything has run (a failure or a stop leaves the library as it was).
"""
from __future__ import annotations

from pathlib import Path

from ..events import Job
from ..results import EvalReport
from .generation import DEFAULT_BATCH_SIZE
from .heldout import DEFAULT_LIMIT, evaluate_heldout


def evaluate_adapter(adapter: str, job: Job, *, data: str | Path | None = None,
                     limit: int = DEFAULT_LIMIT, seed: int = 0, max_tokens: int = 0,
                     batch_size: int = DEFAULT_BATCH_SIZE, probe: bool = True,
                     parity: bool = False, fused: str | Path | None = None,
                     ggufs: list[str | Path] | None = None, markdown: str | Path | None = None,
                     library_dir: Path | None = None) -> EvalReport:
    """Evaluate ``adapter`` -> the EvalReport, kept in its record (``report.path``).

    Raises TailorError (see evaluate_heldout, probe.forgetting_probe, parity.shipped_parity;
    a ``markdown`` file that exists is refused before any work) and Cancelled."""
    from .. import library
    from .markdown import report_markdown
    from .record import check_markdown_target, save_report

    md = check_markdown_target(Path(markdown)) if markdown else None
    info = library.get_adapter(adapter, library_dir)
    job.started({"adapter": adapter, "data": str(data) if data else None, "limit": limit,
                 "seed": seed, "max_tokens": max_tokens, "batch_size": batch_size,
                 "probe": probe, "parity": parity})
    heldout_end = 0.6 if probe or parity else 1.0
    report = evaluate_heldout(adapter, job.nested(0.0, heldout_end), data=data, limit=limit,
                              seed=seed, max_tokens=max_tokens, batch_size=batch_size,
                              library_dir=library_dir)
    if probe:
        from .probe import forgetting_probe

        report.probe = forgetting_probe(adapter, job.nested(heldout_end, 0.8 if parity else 1.0),
                                        library_dir=library_dir)
    if parity:
        from .parity import shipped_parity

        report.parity = shipped_parity(adapter, job.nested(0.8 if probe else heldout_end, 1.0),
                                       fused=fused, ggufs=ggufs,
                                       library_dir=library_dir)
    job.cancel.raise_if_cancelled()
    report.markdown = str(md) if md is not None else ""
    save_report(info.path, report)
    if md is not None:
        from ..atomic import write_text_atomic

        write_text_atomic(md, report_markdown(report), overwrite=False)
    return report
