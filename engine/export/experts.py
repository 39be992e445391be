"""Mixture-of-experts tensors for llama.cpp: every expert of a layer in one 3-D tensor
(``blk.N.ffn_{gate,up,down}_exps``: experts x rows x columns in numpy order), the router
(``ffn_gate_inp``) beside them.

Hugging Face checkpoints hold one 2-D tensor per expert (``mlp.experts.E.gate_proj``, Mixtral's
``block_sparse_moe.experts.E.w1``); MLX-fused folders hold them stacked already
(``switch_mlp.gate_proj``, as mlx-lm's SwitchGLU keeps them). Both come out the same: the
per-expert tensors are grouped into one ``StackedRef`` under the MLX name, read expert by
expert, so memory stays at a piece of the stack.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..events import TailorError
from .safetensors_stream import RowsFromShape

# One expert's tensor in a Hugging Face checkpoint: (prefix, expert, projection)
_HF_EXPERT = re.compile(r"(.*\.(?:mlp|block_sparse_moe))\.experts\.(\d+)\.(\w+)\.weight$")
# Mixtral's names for the three projections
_MIXTRAL = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
# Granite MoE's stacked tensors (JetMoE's parallel experts: gate and up in one)
_GRANITE_IN = re.compile(r"(.*\.block_sparse_moe)\.input_linear\.weight$")
_GRANITE_OUT = re.compile(r"(.*\.block_sparse_moe)\.output_linear\.weight$")
# Qwen3.5-MoE's (transformers 5): stacked, gate and up in one, no ".weight"
_FUSED_IN = re.compile(r"(.*\.mlp)\.experts\.gate_up_proj$")
_FUSED_OUT = re.compile(r"(.*\.mlp)\.experts\.down_proj$")
# A stacked projection (MLX's name) -> llama.cpp's tensor
STACKED = re.compile(r"model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.switch_mlp\."
                     r"(gate|up|down)_proj\.weight$")


@dataclass
class StackedRef(RowsFromShape):
    """The experts of one projection as one [experts, rows, cols] tensor (TensorRef's reading
    interface: ``read(e0, e1)`` reads experts e0..e1-1)."""

    name: str
    parts: list  # TensorRef per expert, in expert order

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.parts), *self.parts[0].shape)

    def read(self, row0: int = 0, row1: int | None = None, *,
             keep_f16: bool = False) -> np.ndarray:
        row1 = self.rows if row1 is None else row1
        return np.stack([p.read(keep_f16=keep_f16) for p in self.parts[row0:row1]])


@dataclass
class SlicedRef(RowsFromShape):
    """Rows [lo, hi) of every expert of a stacked [experts, rows, cols] tensor, under another
    name (Granite MoE's input_linear holds gate then up; llama.cpp wants them apart)."""

    name: str
    source: object  # the TensorRef of the whole stack
    lo: int
    hi: int

    @property
    def shape(self) -> tuple[int, ...]:
        e, _rows, cols = self.source.shape
        return (e, self.hi - self.lo, cols)

    def read(self, row0: int = 0, row1: int | None = None, *,
             keep_f16: bool = False) -> np.ndarray:
        return self.source.read(row0, row1, keep_f16=keep_f16)[:, self.lo:self.hi]


def _granite_moe(r) -> list | None:
    """Granite MoE's input_linear as gate and up, output_linear as down (None: not one)."""
    m = _GRANITE_IN.match(r.name) or _FUSED_IN.match(r.name)
    if m and len(r.shape) == 3 and r.shape[1] % 2 == 0:
        half = r.shape[1] // 2
        return [SlicedRef(f"{m.group(1)}.switch_mlp.gate_proj.weight", r, 0, half),
                SlicedRef(f"{m.group(1)}.switch_mlp.up_proj.weight", r, half, 2 * half)]
    m = _GRANITE_OUT.match(r.name) or _FUSED_OUT.match(r.name)
    if m and len(r.shape) == 3:
        return [SlicedRef(f"{m.group(1)}.switch_mlp.down_proj.weight", r, 0, r.shape[1])]
    return None


def stack_experts(refs: list) -> list:
    """``refs`` with each layer's per-expert tensors replaced by one StackedRef per projection
    (TailorError for a layer whose experts are missing or differ in shape)."""
    groups: dict[tuple[str, str], dict[int, object]] = {}
    rest = []
    for r in refs:
        m = _HF_EXPERT.match(r.name)
        if not m:
            rest += _granite_moe(r) or [r]
            continue
        prefix, expert, proj = m.group(1), int(m.group(2)), m.group(3)
        groups.setdefault((prefix, _MIXTRAL.get(proj, proj)), {})[expert] = r
    for (prefix, proj), by_expert in sorted(groups.items()):
        name = f"{prefix}.switch_mlp.{proj}.weight"
        if sorted(by_expert) != list(range(len(by_expert))):
            missing = sorted(set(range(max(by_expert) + 1)) - set(by_expert))
            raise TailorError(f"{name}: experts {missing[:5]} are missing from the checkpoint",
                              hint="download or copy the model again: a shard may be missing")
        parts = [by_expert[e] for e in range(len(by_expert))]
        if len({tuple(p.shape) for p in parts}) != 1:
            raise TailorError(f"{name}: the experts' tensors differ in shape")
        rest.append(StackedRef(name, parts))
    return rest


def stacked_gguf_name(hf_name: str) -> str | None:
    """``blk.N.ffn_X_exps.weight`` for a stacked projection, else None."""
    m = STACKED.match(hf_name)
    return f"blk.{m.group(1)}.ffn_{m.group(2)}_exps.weight" if m else None
