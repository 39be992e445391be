"""One piece of a tensor (a range of its rows) as a self-contained, picklable job: where its
values come from, what they need on the way, the GGML type they become. The GGUF writer runs
jobs in its own threads or in encoding worker processes (piece_processes.py); both read and
encode a piece here, so their bytes are the same. Imports numpy and the encoders only."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .encoders import encode_type


@dataclass
class PieceJob:
    source: object  # a tensor reference (read(row0, row1, keep_f16=...)), or the values
    row0: int
    row1: int
    transform: Callable[[np.ndarray], np.ndarray] | None  # a row_transforms object
    type_name: str  # the GGML type ("Q4_K")
    weights: np.ndarray | None = None  # importance-matrix rows of the piece (imatrix_plan)
    label: str = ""  # the tensor's name, for messages

    def values(self) -> np.ndarray:
        if isinstance(self.source, np.ndarray):  # generated tensors (rope_freqs): as given
            return self.source
        if len(self.source.shape) < 2:
            w = self.source.read()  # norms and biases: float32 arithmetic
        else:
            # float16 stays float16 until the encoder (2-D transforms only move rows)
            w = self.source.read(self.row0, self.row1, keep_f16=True)
        return self.transform(w) if self.transform is not None else w

    def encode(self) -> np.ndarray:
        """The piece's GGUF bytes (ValueError for values the type cannot carry)."""
        return encode_type(self.values(), self.type_name, threads=1, weights=self.weights)

    def refusal(self, reason: str) -> tuple[str, str]:
        """(message, hint) for a ValueError of encode."""
        return (f"{self.label} cannot be written as {self.type_name}: {reason} (counting rows "
                f"from row {self.row0} of the tensor)",
                "the model's weights hold values no GGUF file can carry in this type; try "
                "--quant f16 or f32, or check the model")
