"""The importance-matrix settings of `tailor export` (help text for the CLI and the app)."""
from __future__ import annotations

from dataclasses import dataclass

from ..configs import opt

AUTO = "auto"


@dataclass
class ImatrixConfig:
    imatrix: str | None = opt(
        None, "an importance matrix for the quantizer: 'auto' computes it in MLX over the "
              "adapter's own training data (or --imatrix-text) and saves it beside the GGUF as "
              "<name>.imatrix.gguf; or a matrix file (llama.cpp's imatrix GGUF or legacy .dat). "
              "Matters most for Q2_K and Q3_K", flag="--imatrix")
    imatrix_text: str | None = opt(
        None, "with --imatrix auto: a plain text file to compute the matrix over instead of the "
              "training data (needed with --model)")
    imatrix_ctx: int = opt(512, "with --imatrix auto: tokens per chunk, each run from an empty "
                                "context (llama-imatrix's --ctx-size)", minimum=16,
                           maximum=131072)
    imatrix_chunks: int | None = opt(
        None, "with --imatrix auto: at most this many chunks (default: all of the data)",
        minimum=1)
