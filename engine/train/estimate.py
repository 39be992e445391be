"""Parameter counts and a memory estimate for a training run, checked against the machine."""
from __future__ import annotations

import os

from mlx.utils import tree_flatten

from .config import TrainConfig
from .memory import MemoryInputs, memory_suggestion, training_memory


def machine_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def estimate(model, model_config: dict, cfg: TrainConfig, longest: int,
             machine_bytes: int | None = None) -> dict:
    """Bytes for weights, adapters, gradients, optimizer state and activations of this run on
    the loaded ``model`` (engine/train/memory.py's model with its exact counts), and whether it
    fits in the machine's memory, with a suggestion when not."""
    params = dict(tree_flatten(model.parameters()))
    trainable = dict(tree_flatten(model.trainable_parameters()))
    c = model_config.get("text_config", model_config)
    hidden = int(c.get("hidden_size", 1024))
    length = min(longest, cfg.max_seq_length)
    # a preference batch of B pairs is B chosen and B rejected rows (their shared prompts
    # computed once: 2B full rows bound it)
    rows = cfg.batch_size * (2 if cfg.objective in ("dpo", "orpo") else 1)
    out = training_memory(MemoryInputs(
        weights_bytes=sum(v.nbytes for v in params.values()),
        trainable_bytes=sum(v.nbytes for v in trainable.values()),
        hidden=hidden, intermediate=int(c.get("intermediate_size", 4 * hidden)),
        layers=int(c.get("num_hidden_layers", len(model.layers))),
        heads=int(c.get("num_attention_heads", 8)), vocab=int(c.get("vocab_size", 32000)),
        batch_size=rows, length=length, grad_checkpoint=cfg.grad_checkpoint,
        activation_bytes=2 if any(v.dtype.size == 2 for v in params.values()) else 4))
    machine = machine_memory_bytes() if machine_bytes is None else machine_bytes
    out.update(machine_bytes=machine,
               trainable_parameters=int(sum(v.size for v in trainable.values())),
               longest_example_tokens=length, fits=True, suggestion="")
    if machine and out["total_bytes"] > 0.8 * machine:
        out["fits"] = False
        out["suggestion"] = memory_suggestion(
            batch_size=cfg.batch_size, grad_accumulation=cfg.grad_accumulation,
            grad_checkpoint=cfg.grad_checkpoint, quantized=bool(model_config.get("quantization")),
            full=cfg.method == "full", length=length)
    return out
