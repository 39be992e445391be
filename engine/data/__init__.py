"""Dataset import: any file a user drops on the window -> validated, tokenized training data.

``prepare_dataset(path, tokenizer, DataConfig(...))`` returns a ``PreparedDataset`` with
``.train``/``.valid`` lists of ``TokenizedExample`` and a ``DataReport``.
"""
from .config import DataConfig
from .prepare import PreparedDataset, TokenizedExample, prepare_dataset
from .report import DataReport, PreviewExample, Problem, TokenStats

__all__ = ["DataConfig", "DataReport", "PreparedDataset", "PreviewExample", "Problem",
           "TokenStats", "TokenizedExample", "prepare_dataset"]
