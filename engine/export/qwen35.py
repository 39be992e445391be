"""Qwen3.5 (dense) for llama.cpp's qwen35: the checkpoint's tensors renamed and changed as
llama.cpp's converter does, so the hybrid layers (Gated DeltaNet linear attention, gated full
attention) load as llama.cpp runs them.

- mlx-lm's folders name everything ``language_model.model...``; Hugging Face's text checkpoint
  ``model...``. The (1 + w) norms are stored as w by Hugging Face (conv1d as [C, 1, K]) and as
  1 + w by mlx-lm (conv1d as [C, K, 1]); llama.cpp wants 1 + w, the conv kernel as [C, K].
- A_log becomes llama.cpp's A = -exp(A_log); dt_bias is its ssm_dt.bias.
- With fewer key heads than value heads, llama.cpp wants the value heads tiled
  (k0 k1 k0 k1 ...) instead of grouped by key head (k0 k0 k1 k1): every tensor indexed by value
  head is reordered (the V rows of in_proj_qkv and of the conv kernel, in_proj_z/b/a, A, dt,
  out_proj's columns).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .safetensors_stream import RowsFromShape

_HF_ONE_PLUS = ("input_layernorm.weight", "post_attention_layernorm.weight",
                "model.norm.weight", "q_norm.weight", "k_norm.weight")


@dataclass
class ChangedRef(RowsFromShape):
    """A tensor read whole and changed by ``fn`` (shape: the changed tensor's)."""

    name: str
    source: object
    fn: Callable[[np.ndarray], np.ndarray]
    shape: tuple[int, ...]

    def read(self, row0: int = 0, row1: int | None = None, *,
             keep_f16: bool = False) -> np.ndarray:
        w = self.fn(self.source.read().astype(np.float32))
        if len(self.shape) <= 1:
            return w
        return w[row0:self.rows if row1 is None else row1]


def tile_value_heads(w: np.ndarray, axis: int, n_k: int, per_k: int, dim: int) -> np.ndarray:
    """Value heads grouped by key head -> tiled, along ``axis`` (n_k x per_k x dim long)."""
    w = np.moveaxis(w, axis, 0)
    rest = w.shape[1:]
    w = w.reshape(n_k, per_k, dim, *rest).swapaxes(0, 1).reshape(n_k * per_k * dim, *rest)
    return np.ascontiguousarray(np.moveaxis(w, 0, axis))


def _tiler(config: dict):
    """(tile, key_dim, value head dim): ``tile(axis, dim, skip)`` makes the function that
    tiles the value heads of a tensor along ``axis`` after its first ``skip`` entries."""
    n_k, n_v = int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"])
    k_dim, v_dim = int(config["linear_key_head_dim"]), int(config["linear_value_head_dim"])
    per_k = n_v // n_k

    def tile(axis: int, dim: int, skip: int = 0):
        def fn(w):
            if per_k == 1:
                return w
            head, tail = np.split(w, [skip], axis=axis)
            return np.concatenate([head, tile_value_heads(tail, axis, n_k, per_k, dim)], axis)
        return fn
    return tile, n_k * k_dim, v_dim


def qwen35_lora(config: dict, module: str, lora_a: np.ndarray, lora_b: np.ndarray
                ) -> tuple[str, np.ndarray, np.ndarray]:
    """A LoRA pair (llama.cpp's layout: a [r, in], b [out, r]) of ``module`` with the value
    heads reordered as in the base tensor: B's rows, or A's columns for out_proj."""
    tile, key_dim, v_dim = _tiler(config)
    module = module.removeprefix("language_model.")
    if module.endswith("linear_attn.in_proj_qkv"):
        lora_b = tile(0, v_dim, skip=2 * key_dim)(lora_b)
    elif module.endswith("linear_attn.in_proj_z"):
        lora_b = tile(0, v_dim)(lora_b)
    elif module.endswith(("linear_attn.in_proj_b", "linear_attn.in_proj_a")):
        lora_b = tile(0, 1)(lora_b)
    elif module.endswith("linear_attn.out_proj"):
        lora_a = tile(1, v_dim)(lora_a)
    return module, lora_a, lora_b


def _split_qkvz(config: dict, r) -> list:
    """Qwen3-Next's in_proj_qkvz ([q, k, v, z] per key head) as llama.cpp's attn_qkv (every
    head's q, then k, then v) and attn_gate (z), as its converter splits it."""
    n_k, n_v = int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"])
    dk, dv = int(config["linear_key_head_dim"]), int(config["linear_value_head_dim"])
    vz = n_v // n_k * dv
    cols = r.shape[1]
    prefix = r.name.removeprefix("language_model.")[: -len("in_proj_qkvz.weight")]

    def part(lo: int, hi: int):
        return lambda w: w.reshape(n_k, 2 * dk + 2 * vz, cols)[:, lo:hi].reshape(-1, cols)

    def qkv(w):
        return np.concatenate([part(0, dk)(w), part(dk, 2 * dk)(w),
                               part(2 * dk, 2 * dk + vz)(w)])
    return [ChangedRef(prefix + "in_proj_qkv.weight", r, qkv, (n_k * (2 * dk + vz), cols)),
            ChangedRef(prefix + "in_proj_z.weight", r, part(2 * dk + vz, 2 * dk + 2 * vz),
                       (n_k * vz, cols))]


def qwen35_refs(config: dict, refs: list, reorder: bool = True) -> list:
    """The checkpoint's refs as llama.cpp's qwen35 tensors (see the module docstring);
    Qwen3-Next's (``reorder`` False: llama.cpp's qwen3next keeps the value heads grouped,
    and its fused in_proj_qkvz is split)."""
    hf_layout = any(r.name.endswith("conv1d.weight") and r.shape[-1] != 1 for r in refs)
    tile, key_dim, v_dim = _tiler(config)
    if not reorder:
        def tile(axis: int, dim: int, skip: int = 0):  # noqa: F811 - grouped, as llama.cpp's
            return lambda w: w

    out = []
    for r in refs:
        name = r.name.removeprefix("language_model.")
        fn, shape = None, tuple(r.shape)
        if name.endswith("linear_attn.in_proj_qkvz.weight"):
            out += _split_qkvz(config, r)
            continue
        if name.endswith("linear_attn.in_proj_qkv.weight"):
            fn = tile(0, v_dim, skip=2 * key_dim)
        elif name.endswith("linear_attn.in_proj_z.weight"):
            fn = tile(0, v_dim)
        elif name.endswith(("linear_attn.in_proj_b.weight", "linear_attn.in_proj_a.weight")):
            fn = tile(0, 1)
        elif name.endswith("linear_attn.out_proj.weight"):
            fn = tile(1, v_dim)
        elif name.endswith("linear_attn.A_log"):
            fn = (lambda t: lambda w: t(-np.exp(w)))(tile(0, 1))
        elif name.endswith("linear_attn.dt_bias"):
            name, fn = name[: -len("dt_bias")] + "dt_proj.bias", tile(0, 1)
        elif name.endswith("linear_attn.conv1d.weight"):
            shape = (r.shape[0], r.shape[1] if r.shape[-1] == 1 else r.shape[-1])
            fn = (lambda t: lambda w: t(w.reshape(w.shape[0], -1)))(
                tile(0, v_dim, skip=2 * key_dim))
        elif name.endswith("mlp.shared_expert_gate.weight") and len(r.shape) == 2:
            shape, fn = (int(np.prod(r.shape)),), lambda w: w.reshape(-1)  # llama.cpp: 1-D
        elif hf_layout and name.endswith(_HF_ONE_PLUS):
            fn = lambda w: w + 1.0  # noqa: E731 - HF stores w of the model's (1 + w)
        out.append(ChangedRef(name, r, fn, shape) if fn or name != r.name else r)
        if fn is None and name != r.name:
            out[-1] = ChangedRef(name, r, lambda w: w, shape)
    return out
