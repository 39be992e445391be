"""Shared helpers for the export tests: llama.cpp and MLX logits, F16 model copies."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np

from engine.export.verify import llama_logits, mlx_logits, open_llama  # noqa: F401

# Strings with Unicode, emoji, runs of spaces, tabs, newlines and digits (no leading space:
# see test_sentencepiece_space_prefix_divergence for that case).
TOKENIZER_STRINGS = [
    "Hello, world!",
    "Ünïcödé café naïve Straße 東京 Привет مرحبا",
    "Emoji 🚀🦙😁 👩‍👩‍👧 ✅",
    "runs of  spaces   and    more\tand\ttabs\t\tend",
    "lines\n\nand\r\nwindows\n\n\n",
    "digits 0 12 345 6789 3.14159 1,000,000 2024-01-01",
    "def f(x):\n    return x * 2  # comment",
]
PROMPTS = ["The quick brown fox jumps over the lazy dog.",
           "def add(a, b):\n    return a + b",
           "Tailor trains adapters; 12 apples and 3 pears."]


def llama(path: Path, lora: Path | None = None):
    return open_llama(path, lora_path=lora)


def llama_tokenize(llm, text: str) -> list[int]:
    return list(llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


def rel_diff(ref: list[np.ndarray], got: list[np.ndarray]) -> float:
    return max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ref, got))


def agreement(ref: list[np.ndarray], got: list[np.ndarray]) -> tuple[int, int]:
    same = sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ref, got))
    return same, sum(a.shape[0] for a in ref)


def f16_copy(src: Path, dst: Path) -> Path:
    """The model folder with its weights rounded to float16 (as a real F16 checkpoint)."""
    import mlx.core as mx

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        weights = mx.load(str(f))
        mx.save_safetensors(str(f), {k: v.astype(mx.float16) for k, v in weights.items()},
                            metadata={"format": "mlx"})
    return dst


def nan_copy(src: Path, dst: Path) -> str:
    """The model folder with a NaN at [5, 7] of layer 0's up_proj -> that tensor's name."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    shard = next(dst.glob("*.safetensors"))
    weights = load_file(str(shard))
    name = next(k for k in weights if k.endswith("layers.0.mlp.up_proj.weight"))
    weights[name] = weights[name].copy()
    weights[name][5, 7] = np.nan
    save_file(weights, str(shard), metadata={"format": "mlx"})
    return name


@contextlib.contextmanager
def quiet_fd2():
    """llama.cpp writes to fd 2 directly; keep test output readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def failed_checks(verification: dict) -> list[dict]:
    """The checks that failed, whole (for an assertion message that names the failing one)."""
    return [c for c in verification["checks"] if c["passed"] is False]


def swapped_blocks_copy(src: Path, dst: Path) -> Path:
    """``src`` with layers 0 and 1 trading their mlp.down_proj: a file llama.cpp loads and
    runs, as an exporter that maps a tensor to the wrong block would write."""
    import mlx.core as mx

    shutil.copytree(src, dst)
    a, b = "model.layers.0.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"
    for f in dst.glob("*.safetensors"):
        w = mx.load(str(f))
        if a in w and b in w:
            w[a], w[b] = w[b], w[a]
            mx.save_safetensors(str(f), w, metadata={"format": "mlx"})
    return dst


def assert_same_tensors(ours: Path, reference: Path, label: str) -> dict[str, str]:
    """Two GGUF files hold the same tensors with the same types and bytes; -> name -> type."""
    import gguf

    a = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(reference)).tensors}
    assert set(a) == set(b)
    wrong_type = {n: (a[n].tensor_type.name, b[n].tensor_type.name) for n in a
                  if a[n].tensor_type != b[n].tensor_type}
    assert not wrong_type, f"{label}: (ours, llama.cpp's) types differ: {wrong_type}"
    wrong_bytes = [n for n in a if not np.array_equal(np.asarray(a[n].data).view(np.uint8),
                                                      np.asarray(b[n].data).view(np.uint8))]
    assert not wrong_bytes, f"{label}: bytes differ in {wrong_bytes} " \
                            f"({ {n: a[n].tensor_type.name for n in wrong_bytes} })"
    return {n: a[n].tensor_type.name for n in a}
