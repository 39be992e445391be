"""Parameter counts and a memory estimate for a training run, checked against the machine."""
from __future__ import annotations

import os

from mlx.utils import tree_flatten

from .config import TrainConfig


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def estimate(model, model_config: dict, cfg: TrainConfig, longest: int,
             machine_bytes: int | None = None) -> dict:
    """Bytes for weights, adapters, gradients, optimizer state and activations.

    Activations are the rough per-token cost of a transformer block kept for the backward pass
    (about 16 hidden-size vectors and 3 MLP-size vectors, plus attention scores), times the
    layers (one layer plus the block inputs with gradient checkpointing), plus the logits of the
    trained positions. It is an estimate to warn early, not a promise.
    """
    params = dict(tree_flatten(model.parameters()))
    trainable = dict(tree_flatten(model.trainable_parameters()))
    weights = sum(v.nbytes for v in params.values())
    trainable_bytes = sum(v.nbytes for v in trainable.values())
    n_trainable = sum(v.size for v in trainable.values())
    c = model_config.get("text_config", model_config)
    hidden = int(c.get("hidden_size", 1024))
    inter = int(c.get("intermediate_size", 4 * hidden))
    layers = int(c.get("num_hidden_layers", len(model.layers)))
    heads = int(c.get("num_attention_heads", 8))
    vocab = int(c.get("vocab_size", 32000))
    length = min(longest, cfg.max_seq_length)
    tokens = cfg.batch_size * length
    act_bytes = 2 if any(v.dtype.size == 2 for v in params.values()) else 4
    per_layer = tokens * (16 * hidden + 3 * inter) * act_bytes \
        + cfg.batch_size * heads * length * length * act_bytes
    activations = (per_layer + layers * tokens * hidden * act_bytes) if cfg.grad_checkpoint \
        else per_layer * layers
    logits = tokens * vocab * 4 * 3
    total = weights + trainable_bytes * 3 + activations + logits  # grads + Adam m, v
    machine = machine_memory_bytes() if machine_bytes is None else machine_bytes
    out = {"weights_bytes": weights, "trainable_bytes": trainable_bytes,
           "optimizer_bytes": 2 * trainable_bytes, "gradient_bytes": trainable_bytes,
           "activation_bytes": activations + logits, "total_bytes": total,
           "machine_bytes": machine, "trainable_parameters": int(n_trainable),
           "longest_example_tokens": length, "fits": True, "suggestion": ""}
    if machine and total > 0.8 * machine:
        tips = []
        if cfg.batch_size > 1:
            tips.append(f"a smaller batch (--batch-size {max(1, cfg.batch_size // 2)}) with "
                        f"--grad-accumulation {cfg.grad_accumulation * 2}")
        if not cfg.grad_checkpoint:
            tips.append("--grad-checkpoint")
        if not model_config.get("quantization") and cfg.method != "full":
            tips.append("a 4-bit base (--quantize-base 4)")
        if length > 512:
            tips.append("a shorter --max-seq-length")
        out["fits"] = False
        out["suggestion"] = "try " + ", or ".join(tips) if tips else ""
    return out
