"""What the import found: problems as ``file:line[:column]: reason``, counts, token statistics
and a preview of rendered examples with the trained spans marked.

The classes live in engine/results.py (the data check's result crosses the process boundary
typed, and the app imports only that module); this module keeps their old import path.
"""
from ..results import (TRAIN_CLOSE, TRAIN_OPEN, DataReport, PreviewExample, Problem,  # noqa: F401
                       TokenStats)
