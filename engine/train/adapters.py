"""Put LoRA/DoRA layers into a model (mlx-lm's own layers) and write mlx-lm's adapter files."""
from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from ..events import TailorError
from .config import TrainConfig

ATTENTION_PREFIXES = ("self_attn.", "attn.", "attention.", "self_attention.")


def linear_keys(model) -> list[str]:
    """Names (relative to a transformer block) of every linear layer in the blocks, the
    mixture-of-experts' stacked expert projections (mlx-lm's switch layers) included."""
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    kinds = (nn.Linear, nn.QuantizedLinear, SwitchLinear, QuantizedSwitchLinear)
    keys: set[str] = set()
    for layer in model.layers:
        for name, m in layer.named_modules():
            if isinstance(m, kinds) or hasattr(m, "to_lora"):
                keys.add(name)
    return sorted(keys)


def _check_dora_targets(model, keys: list[str], num_layers: int) -> None:
    """mlx-lm has no DoRA for expert layers (it raises ValueError): say so before training."""
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear, SwitchLinear

    experts = sorted({n for layer in model.layers[len(model.layers) - num_layers:]
                      for n, m in layer.named_modules()
                      if n in keys and isinstance(m, (SwitchLinear, QuantizedSwitchLinear))})
    if experts:
        raise TailorError(f"DoRA cannot train the expert layers ({', '.join(experts)}): "
                          "mlx-lm has DoRA for plain linear layers only",
                          hint="use --method lora, or --targets attention for DoRA")


def target_keys(model, targets: str) -> list[str]:
    """Resolve ``attention`` / ``all-linear`` / ``a,b,c`` to block-relative module names."""
    available = linear_keys(model)
    t = targets.strip()
    if t == "all-linear":
        return available
    if t == "attention":
        keys = [k for k in available if k.startswith(ATTENTION_PREFIXES)]
        if not keys:
            raise TailorError("this model has no attention projections under a known name",
                              hint="available modules: " + ", ".join(available))
        return keys
    wanted = [w.strip() for w in t.split(",") if w.strip()]
    keys, unknown = [], []
    for w in wanted:
        hits = [k for k in available if k == w or k.split(".")[-1] == w]
        if not hits:
            unknown.append(w)
        keys += hits
    if unknown:
        raise TailorError(f"no linear module named {', '.join(unknown)} in this model",
                          hint="available modules: " + ", ".join(available))
    return sorted(set(keys))


def apply_adapters(model, cfg: TrainConfig) -> dict:
    """Freeze the base and add trainable adapters (or unfreeze all for full); return the
    ``adapter_config.json`` dict mlx-lm expects."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    n_blocks = len(model.layers)
    num_layers = n_blocks if cfg.num_layers in (-1, 0) else min(cfg.num_layers, n_blocks)
    keys = target_keys(model, cfg.targets)
    lora_parameters = {"rank": cfg.rank, "scale": cfg.lora_scale, "dropout": cfg.dropout,
                       "keys": keys}
    if cfg.method == "full":
        if any(isinstance(m, nn.QuantizedLinear) for _, m in model.named_modules()):
            raise TailorError("full fine-tuning needs a full-precision base; this one is "
                              "quantized", hint="use --method lora (QLoRA) on a quantized base")
        # as mlx-lm's full fine-tune: the last N blocks train, embeddings and head stay fixed
        model.freeze()
        for layer in model.layers[n_blocks - num_layers:]:
            layer.unfreeze()
    else:
        model.freeze()
        if cfg.method == "dora":
            _check_dora_targets(model, keys, num_layers)
        linear_to_lora_layers(model, num_layers, lora_parameters,
                              use_dora=(cfg.method == "dora"))
    return {"fine_tune_type": cfg.method, "num_layers": num_layers,
            "lora_parameters": lora_parameters}


def trainable_weights(model) -> dict[str, mx.array]:
    return dict(tree_flatten(model.trainable_parameters()))


def count(tree_or_dict) -> int:
    return int(sum(v.size for _, v in tree_flatten(tree_or_dict)))


def write_adapter_files(folder: Path, weights: dict[str, mx.array], adapter_config: dict,
                        base_model_path: str) -> None:
    """Write ``adapters.safetensors`` + ``adapter_config.json`` (temp names, then rename)."""
    from ..atomic import atomic_path, save_safetensors, write_json_atomic

    target = folder / "adapters.safetensors"
    with atomic_path(target, overwrite=True,
                     needed_bytes=sum(v.nbytes for v in weights.values())) as tmp:
        save_safetensors(tmp, weights, metadata={"format": "mlx"})
    write_json_atomic(folder / "adapter_config.json",
                      {**adapter_config, "model": base_model_path})


def adapter_shapes(weights: dict[str, mx.array]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in weights.items()}


def read_adapter_config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
