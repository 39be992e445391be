"""Library adapters for the export tests, made as the brief allows before training lands:
mlx-lm's ``linear_to_lora_layers`` (or DoRA) on a tiny model with small random ``lora_b`` (so the
adapter changes the model), saved as mlx-lm's own files plus a Tailor manifest."""
from __future__ import annotations

import json
from pathlib import Path

from engine.library import adapter_path, write_manifest

KEYS = {"llama": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"],
        "phi3": ["self_attn.qkv_proj", "mlp.gate_up_proj", "mlp.down_proj"]}
DEFAULT_KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                "mlp.down_proj"]


def make_library_adapter(name: str, base_dir: Path, *, rank: int = 4, scale: float = 2.0,
                         dora: bool = False, seed: int = 0, std: float = 0.05) -> Path:
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm import load
    from mlx_lm.tuner.utils import linear_to_lora_layers

    config = json.loads((Path(base_dir) / "config.json").read_text())
    model, _ = load(str(base_dir))
    model.freeze()
    params = {"rank": rank, "scale": scale, "dropout": 0.0,
              "keys": KEYS.get(config["model_type"], DEFAULT_KEYS)}
    # Seeded before the LoRA layers are made: their lora_a is random too.
    mx.random.seed(seed)
    linear_to_lora_layers(model, len(model.layers), params, use_dora=dora)
    for _, module in model.named_modules():
        if hasattr(module, "lora_b"):
            module.lora_b = mx.random.normal(module.lora_b.shape) * std
    folder = adapter_path(name)
    folder.mkdir(parents=True)
    weights = dict(tree_flatten(model.trainable_parameters()))
    mx.save_safetensors(str(folder / "adapters.safetensors"), weights)
    (folder / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "dora" if dora else "lora", "num_layers": len(model.layers),
        "lora_parameters": params, "model": str(base_dir)}))
    write_manifest(folder, {"name": name, "status": "finished",
                            "base_model": {"path": str(base_dir), "repo_id": None,
                                           "revision": None, "sha256": None,
                                           "architecture": config["model_type"]},
                            "dataset": {}, "settings": {}, "loss_history": {"train": [],
                                                                             "valid": []},
                            "best_val_loss": None, "versions": [], "created": 0, "finished": 0})
    return folder
