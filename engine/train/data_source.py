"""The training set, from engine.data's ``prepare_dataset`` (validation, masking, split)."""
from __future__ import annotations

from pathlib import Path

from ..data import DataConfig, prepare_dataset
from ..events import CancelToken, Log, Reporter, null_reporter


def prepare(path: Path, tokenizer, data_config: DataConfig | None = None, *,
            report: Reporter = null_reporter, cancel: CancelToken | None = None,
            job: str = "train"):
    """(PreparedDataset, counts for the manifest); raises TailorError naming file:line."""
    prepared = prepare_dataset(Path(path), tokenizer, data_config or DataConfig(),
                               report=report, cancel=cancel, job=job)
    rep = prepared.report
    counts = {k: v for k, v in rep.to_dict().items() if isinstance(v, (int, float))}
    counts.update(train=len(prepared.train), valid=len(prepared.valid))
    report(Log(job=job, level="info", message=rep.format_text(max_problems=20)))
    return prepared, counts
