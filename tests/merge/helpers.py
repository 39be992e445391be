"""Library LoRA adapters built directly (mlx-lm's own LoRA layers on a tiny model, random
lora_b so they change the model), with every knob a merge must handle: rank, scale (an rsLoRA
run records alpha/sqrt(r) as its scale), target keys, last-N layers, DoRA."""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
from mlx.utils import tree_flatten

from engine.library import adapter_path, write_manifest
from engine.models import model_fingerprint

ATTN = ["self_attn.q_proj", "self_attn.v_proj"]
MLP = ["self_attn.q_proj", "mlp.down_proj", "mlp.up_proj"]
TOKENS = [[1, 5, 9, 13, 21, 34, 55, 89], [2, 7, 3, 11, 40, 6]]


def make_lora(name: str, base: Path, *, rank: int = 4, scale: float = 2.0, keys=ATTN,
              num_layers: int = -1, seed: int = 0, std: float = 0.05, dora: bool = False,
              record_sha: bool = True) -> Path:
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = mlx_lm.load(str(base))
    model.freeze()
    n = len(model.layers) if num_layers in (-1, 0) else num_layers
    params = {"rank": rank, "scale": scale, "dropout": 0.0, "keys": list(keys)}
    mx.random.seed(seed)
    linear_to_lora_layers(model, n, params, use_dora=dora)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * std
    folder = adapter_path(name)
    folder.mkdir(parents=True)
    mx.save_safetensors(str(folder / "adapters.safetensors"),
                        dict(tree_flatten(model.trainable_parameters())))
    (folder / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "dora" if dora else "lora", "num_layers": n,
        "lora_parameters": params, "model": str(base)}))
    config = json.loads((Path(base) / "config.json").read_text())
    write_manifest(folder, {"name": name, "status": "finished",
                            "base_model": {"path": str(base), "given": str(base),
                                           "sha256": model_fingerprint(base) if record_sha
                                           else None,
                                           "architecture": config["model_type"]},
                            "dataset": {}, "settings": {"method": "lora", "rank": rank},
                            "loss_history": {"train": [], "valid": []},
                            "best_val_loss": None, "created": 0, "finished": 0})
    return folder


def logits(base: Path, adapter: Path | None = None, tokens=TOKENS) -> list[np.ndarray]:
    model, _ = mlx_lm.load(str(base), adapter_path=str(adapter) if adapter else None)
    return [np.array(model(mx.array([t]))[0].astype(mx.float32)) for t in tokens]


def lora_changes(adapter: Path) -> dict[str, np.ndarray]:
    """module -> scale * B.T @ A.T in float64, read from the files (the reference)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_parameters"]["scale"]
    w = {k: np.array(v, dtype=np.float64) for k, v in mx.load(str(adapter /
                                                                 "adapters.safetensors")).items()}
    return {k[:-len(".lora_a")]: scale * w[k[:-1] + "b"].T @ v.T
            for k, v in w.items() if k.endswith(".lora_a")}


def logits_with_changes(base: Path, changes: dict[str, np.ndarray], tokens=TOKENS
                        ) -> list[np.ndarray]:
    """The base's logits with ``changes`` (module -> dW) added to its weights."""
    from mlx.utils import tree_unflatten

    model, _ = mlx_lm.load(str(base))
    params = dict(tree_flatten(model.parameters()))
    new = [(f"{m}.weight", mx.array((np.array(params[f"{m}.weight"], np.float64) + d)
                                    .astype(np.float32))) for m, d in changes.items()]
    model.update(tree_unflatten(new))
    return [np.array(model(mx.array([t]))[0].astype(mx.float32)) for t in tokens]


def add_changes(*weighted: tuple[float, dict]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for w, changes in weighted:
        for m, d in changes.items():
            out[m] = out.get(m, 0) + w * d
    return out


def max_rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b))
