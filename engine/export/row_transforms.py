"""The changes a checkpoint tensor needs on its way into a GGUF file, as small picklable
objects (numpy only), so an encoding worker process applies them without importing the
architecture tables: architectures.row_transform picks one per tensor."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotate-half Q/K rows -> llama.cpp's interleaved rotary layout (llama only)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


@dataclass(frozen=True)
class PermuteRows:
    """Q/K rows of ``n_head`` heads into llama.cpp's rotary order (the whole tensor)."""

    n_head: int

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return permute_rows(w, self.n_head)


@dataclass(frozen=True)
class AddOne:
    """HF Gemma stores a norm's w; the model multiplies by (1 + w), llama.cpp by its weight."""

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return w + 1.0
