"""A library adapter for the tests, made the way the brief allows before training: mlx-lm's
``linear_to_lora_layers`` on a tiny model with random ``lora_b`` (so the adapter changes the
model), saved as mlx-lm's files plus a Tailor manifest."""
from __future__ import annotations

import json
from pathlib import Path

from engine.library import adapter_path, write_manifest


def make_library_adapter(name: str, base_dir: Path, kind: str, rank: int = 4) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    model, _ = load(str(base_dir))
    model.freeze()
    params = {"rank": rank, "scale": 10.0, "dropout": 0.0}
    linear_to_lora_layers(model, len(model.layers), params)
    mx.random.seed(0)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * 0.05
    folder = adapter_path(name)
    folder.mkdir(parents=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    (folder / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora", "num_layers": len(model.layers), "lora_parameters": params,
        "model": str(base_dir)}))
    config = json.loads((Path(base_dir) / "config.json").read_text())
    write_manifest(folder, {"name": name, "status": "finished",
                            "base_model": {"path": str(base_dir), "repo_id": None,
                                           "revision": None, "sha256": None,
                                           "architecture": config["model_type"]},
                            "dataset": {}, "settings": {}, "loss_history": {"train": [],
                                                                             "valid": []},
                            "best_val_loss": None, "versions": [], "created": 0, "finished": 0})
    return folder
