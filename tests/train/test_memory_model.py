"""The training memory model (engine/train/memory.py) works from counts alone, without MLX, so
the Train page's preview can share the engine's formula (issue 13: one memory model)."""
from __future__ import annotations

import subprocess
import sys

from engine.train.memory import MemoryInputs, memory_suggestion, training_memory

from .conftest import REPO


def test_the_parts_add_up_and_checkpointing_keeps_less():
    m = MemoryInputs(weights_bytes=1_000, trainable_bytes=10, hidden=64, intermediate=256,
                     layers=4, heads=4, vocab=1000, batch_size=2, length=16)
    full = training_memory(m)
    assert full["total_bytes"] == (full["weights_bytes"] + full["gradient_bytes"]
                                   + full["optimizer_bytes"] + full["activation_bytes"])
    tokens = 2 * 16
    per_layer = tokens * (16 * 64 + 3 * 256) * 2 + 2 * 4 * 16 * 16 * 2
    assert full["activation_bytes"] == per_layer * 4 + tokens * 1000 * 12
    ckpt = training_memory(MemoryInputs(**{**m.__dict__, "grad_checkpoint": True}))
    assert ckpt["activation_bytes"] < full["activation_bytes"]


def test_the_suggestion_names_what_to_change():
    s = memory_suggestion(batch_size=8, grad_accumulation=1, grad_checkpoint=False,
                          quantized=False, full=False, length=2048)
    assert s == ("try a smaller batch (--batch-size 4) with --grad-accumulation 2, or "
                 "--grad-checkpoint, or a 4-bit base (--quantize-base 4), or a shorter "
                 "--max-seq-length")
    assert memory_suggestion(batch_size=1, grad_accumulation=1, grad_checkpoint=True,
                             quantized=True, full=False, length=256) == ""


def test_the_memory_model_imports_no_mlx():
    code = ("import sys; import engine.train.memory; "
            "sys.exit(1 if any(m == 'mlx' or m.startswith('mlx.') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
