"""Trainable parameters and memory of a training run, estimated from the model's config.json.

Pure arithmetic (no MLX), so the Train page can update it on every keystroke. The engine
reports the exact count when the run starts; this is the preview.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
GIB = 1024 ** 3


@dataclass
class Estimate:
    base_params: int
    trainable_params: int
    weights_bytes: int
    training_bytes: int   # adapters/weights being trained + gradients + Adam state
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.training_bytes + self.activation_bytes

    def summary(self, machine_bytes: int | None = None) -> str:
        text = (f"{human_count(self.trainable_params)} trainable of "
                f"{human_count(self.base_params)} parameters · about "
                f"{human_bytes(self.total_bytes)} memory")
        if machine_bytes and self.total_bytes > 0.75 * machine_bytes:
            text += (f" — more than this Mac can spare ({machine_bytes / GIB:.0f} GB): use a "
                     "smaller batch or sequence length, gradient checkpointing, or a 4-bit base")
        return text


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def human_bytes(n: float) -> str:
    """12 MB, 640 MB, 1.5 GB: MB below a gigabyte (never "0.0 GB" or "0.01 GB")."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            if unit == "GB":
                return f"{n:.1f} GB" if n < 100 else f"{n:.0f} GB"
            return f"{n:.1f} {unit}" if unit == "MB" and n < 10 else f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_tokens(n: float) -> str:
    """A token count as people read it: 134, 1,250, 2.3M (a median or percentile is rounded:
    "95% 134", not "134.25")."""
    n = float(n or 0)
    return f"{n / 1e6:.1f}M" if n >= 1e7 else f"{round(n):,}"


def read_model_config(folder: str | Path) -> dict:
    try:
        return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def module_shapes(cfg: dict) -> dict[str, tuple[int, int]]:
    """(in, out) of each linear layer in one transformer block."""
    h = int(cfg.get("hidden_size", 0))
    heads = int(cfg.get("num_attention_heads", 1) or 1)
    kv = int(cfg.get("num_key_value_heads", heads) or heads)
    hd = int(cfg.get("head_dim") or (h // heads if heads else 0))
    inter = int(cfg.get("intermediate_size", 4 * h))
    return {"q_proj": (h, heads * hd), "k_proj": (h, kv * hd), "v_proj": (h, kv * hd),
            "o_proj": (heads * hd, h), "gate_proj": (h, inter), "up_proj": (h, inter),
            "down_proj": (inter, h)}


def estimate(cfg: dict, settings: dict) -> Estimate | None:
    """``settings`` holds TrainConfig fields (method, rank, targets, num_layers, batch_size,
    max_seq_length, grad_checkpoint, quantize_base). None when the config is unusable."""
    cfg = {**cfg.get("text_config", {}), **cfg} if "text_config" in cfg else cfg
    h = int(cfg.get("hidden_size", 0) or 0)
    layers = int(cfg.get("num_hidden_layers", 0) or 0)
    vocab = int(cfg.get("vocab_size", 0) or 0)
    if not (h and layers and vocab):
        return None
    shapes = module_shapes(cfg)
    per_block = sum(i * o for i, o in shapes.values()) + 2 * h
    embed = vocab * h * (1 if cfg.get("tie_word_embeddings", False) else 2)
    base = layers * per_block + embed + h

    method = settings.get("method", "lora")
    rank = int(settings.get("rank", 16))
    n = int(settings.get("num_layers", -1))
    adapted = layers if n in (-1, 0) else min(n, layers)
    targets = str(settings.get("targets", "all-linear"))
    if targets == "all-linear":
        keys = list(shapes)
    elif targets == "attention":
        keys = list(ATTENTION)
    else:
        keys = [k.strip().split(".")[-1] for k in targets.split(",") if k.strip()]
    if method == "full":
        trainable = base
    else:
        per = sum(rank * (shapes[k][0] + shapes[k][1]) for k in keys if k in shapes)
        if method == "dora":
            per += sum(shapes[k][1] for k in keys if k in shapes)
        trainable = per * adapted

    bits = (cfg.get("quantization") or {}).get("bits") or settings.get("quantize_base")
    bytes_per_weight = (bits / 8 * 1.125) if bits else 2.0  # + scales/biases per group
    weights = int(base * bytes_per_weight)
    training = trainable * 16  # fp32 weights + gradient + two Adam moments
    tokens = int(settings.get("batch_size", 4)) * int(settings.get("max_seq_length", 2048))
    # Saved activations per token and layer, in fp16; checkpointing keeps about one per layer.
    per_token_layer = h * (2 if settings.get("grad_checkpoint") else 16) * 2
    activations = tokens * layers * per_token_layer + tokens * vocab * 4
    return Estimate(base, trainable, weights, training, activations)
