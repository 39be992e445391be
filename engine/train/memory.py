"""The training memory model, from counts alone (no MLX): bytes for the weights, the trainable
weights' gradients and Adam moments, and the activations kept for the backward pass.

engine/train/estimate.py feeds it the loaded model's exact counts before a run starts; a
preview (the app's Train page) can feed it counts read from config.json, so both say the same
thing for the same inputs. It is an estimate to warn early, not a promise.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryInputs:
    weights_bytes: int        # the base weights as loaded (quantized ones at their size)
    trainable_bytes: int      # the adapter (or, full fine-tuning, every) weight being trained
    hidden: int
    intermediate: int
    layers: int
    heads: int
    vocab: int
    batch_size: int
    length: int               # tokens per example: the longest, capped by max_seq_length
    grad_checkpoint: bool = False
    activation_bytes: int = 2  # bytes per activation value: 2 for a 16-bit model, else 4


def training_memory(m: MemoryInputs) -> dict:
    """The estimate's parts and total, in bytes.

    Activations are the rough per-token cost of a transformer block kept for the backward pass
    (about 16 hidden-size vectors and 3 MLP-size vectors, plus attention scores), times the
    layers (one layer plus the block inputs with gradient checkpointing), plus the logits of
    the trained positions (float32, three copies: logits, softmax, gradient).
    """
    tokens = m.batch_size * m.length
    per_layer = tokens * (16 * m.hidden + 3 * m.intermediate) * m.activation_bytes \
        + m.batch_size * m.heads * m.length * m.length * m.activation_bytes
    activations = (per_layer + m.layers * tokens * m.hidden * m.activation_bytes) \
        if m.grad_checkpoint else per_layer * m.layers
    logits = tokens * m.vocab * 4 * 3
    total = m.weights_bytes + m.trainable_bytes * 3 + activations + logits  # grads + Adam m, v
    return {"weights_bytes": m.weights_bytes, "trainable_bytes": m.trainable_bytes,
            "optimizer_bytes": 2 * m.trainable_bytes, "gradient_bytes": m.trainable_bytes,
            "activation_bytes": activations + logits, "total_bytes": total}


def memory_suggestion(*, batch_size: int, grad_accumulation: int, grad_checkpoint: bool,
                      quantized: bool, full: bool, length: int) -> str:
    """What to change when a run needs more memory than the machine has ("" if nothing)."""
    tips = []
    if batch_size > 1:
        tips.append(f"a smaller batch (--batch-size {max(1, batch_size // 2)}) with "
                    f"--grad-accumulation {grad_accumulation * 2}")
    if not grad_checkpoint:
        tips.append("--grad-checkpoint")
    if not quantized and not full:
        tips.append("a 4-bit base (--quantize-base 4)")
    if length > 512:
        tips.append("a shorter --max-seq-length")
    return "try " + ", or ".join(tips) if tips else ""
