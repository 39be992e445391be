"""`tailor export --imatrix auto` is one job on one bar: a single Started event before any
Progress, the importance matrix's chunks on the first part of the bar, the export's own
stages (fuse, export, verify, quality) after it, and the bar never goes back."""
from __future__ import annotations

import contextlib
import io

from engine.cli import main as cli_main
from engine.events import Progress, Started, decode_event
from tests.export.test_imatrix_export import trained  # noqa: F401 (the fixture)


def test_auto_matrix_and_export_share_one_bar_that_never_goes_back(trained, tmp_path):  # noqa: F811
    events_file = tmp_path / "events.jsonl"
    out = tmp_path / "out" / "im-q2_k.gguf"
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["export", "--adapter", "im", "--quant", "q2_k", "--imatrix", "auto",
                         "--imatrix-ctx", "64", "--out", str(out),
                         "--events", str(events_file), "--quiet"])
    assert code == 0
    events = [decode_event(line) for line in events_file.read_text().splitlines()]
    kinds = [type(e) for e in events]
    assert kinds.count(Started) == 1
    assert Progress in kinds and kinds.index(Started) < kinds.index(Progress)
    bar = [(e.stage, e.done / e.total) for e in events if isinstance(e, Progress)]
    fractions = [f for _, f in bar]
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), bar
    stages = [s for s, _ in bar]
    # the matrix first, on its own share; then the export's stages, still on the same bar
    first_export = stages.index("fuse")
    assert set(stages[:first_export]) == {"imatrix"} and "imatrix" not in stages[first_export:]
    assert 0 < fractions[first_export - 1] <= fractions[first_export] < 1
    assert {"export", "verify"} <= set(stages[first_export:]) and fractions[-1] == 1.0
