"""A broken mixture-of-experts model for the verification checks (tests and bench)."""
from __future__ import annotations

from pathlib import Path


def swapped_experts_copy(src: Path, dst: Path) -> Path:
    """``src`` with layers 0 and 1 trading their expert down projections (a mapping bug)."""
    import shutil

    import mlx.core as mx

    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        w = mx.load(str(f))
        for k in [k for k in w if "layers.0." in k and any(
                p in k for p in ("down", ".w2", "output_linear"))]:
            other = k.replace("layers.0.", "layers.1.")
            if other in w:
                w[k], w[other] = w[other], w[k]
        mx.save_safetensors(str(f), w, metadata={"format": "pt"})
    return dst
