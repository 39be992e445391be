"""Inputs for the quantized verification checks (tests and bench/verify_tolerances.py):
broken GGUF files (a correct export edited in place the way an exporter bug would leave it, so
llama.cpp loads it and answers wrongly) and a seeded importance matrix."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def _tensors(path: Path):
    import gguf

    reader = gguf.GGUFReader(str(path), "r+")
    return reader, {t.name: t for t in reader.tensors}


def _same_kind_pair(tensors: dict, suffix: str) -> tuple[str, str]:
    """Two blocks' ``suffix`` tensors of one type and shape (layer rules give ffn_down other
    types in some layers)."""
    names = sorted((n for n in tensors if n.endswith(suffix)), key=lambda n: int(n.split(".")[1]))
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ta, tb = tensors[a], tensors[b]
            if ta.tensor_type == tb.tensor_type and list(ta.shape) == list(tb.shape):
                return a, b
    raise ValueError(f"no two {suffix} tensors of one type and shape")


def swapped_tensors(src: Path, dst: Path, suffix: str = "ffn_down.weight") -> str:
    """Two blocks trading their ``suffix`` tensors (a layer-index bug). -> what changed."""
    shutil.copyfile(src, dst)
    reader, tensors = _tensors(dst)
    a, b = _same_kind_pair(tensors, suffix)
    keep = np.array(tensors[a].data)
    tensors[a].data[...] = tensors[b].data
    tensors[b].data[...] = keep
    del reader
    return f"{a} <-> {b}"


def reversed_rows(src: Path, dst: Path, name: str = "blk.1.attn_q.weight") -> str:
    """One tensor with its rows in reverse order (a layout bug: heads and rope pairs mixed)."""
    shutil.copyfile(src, dst)
    reader, tensors = _tensors(dst)
    data = tensors[name].data
    data[...] = np.array(data)[::-1]
    del reader
    return f"{name} rows reversed"


def flat_rope_table(src: Path, dst: Path) -> str:
    """rope_freqs (llama 3's long-context table) all 1: as a file without the table."""
    shutil.copyfile(src, dst)
    reader, tensors = _tensors(dst)
    tensors["rope_freqs.weight"].data[...] = 1.0
    del reader
    return "rope_freqs.weight all 1"


def scaled_norm(src: Path, dst: Path, name: str = "blk.1.attn_norm.weight",
                factor: float = 0.5) -> str:
    """One norm's weights scaled (a missing or doubled offset)."""
    shutil.copyfile(src, dst)
    reader, tensors = _tensors(dst)
    data = tensors[name].data
    data[...] = np.array(data) * factor
    del reader
    return f"{name} x{factor}"


BROKEN_KINDS = {"swapped": swapped_tensors, "wrong tensor": reversed_rows,
                "rope table": flat_rope_table, "norm": scaled_norm}


def seeded_imatrix(src: Path, quant: str) -> dict:
    """A seeded gamma(0.5) importance matrix for every matrix ``src`` exports at ``quant``."""
    from engine.export.architectures import arch_info
    from engine.export.safetensors_stream import list_tensors
    from engine.export.write import plan_tensors
    from engine.models.load import read_config

    rng = np.random.default_rng(21)
    out = {}
    for p in plan_tensors(arch_info(read_config(src)), list_tensors(src), quant):
        if len(p.shape) >= 2 and p.name != "token_embd.weight":
            rows = p.shape[0] if len(p.shape) == 3 else 1
            out[p.name] = rng.gamma(0.5, 2.0, rows * p.shape[-1]).astype(np.float32)
    return out
