"""Granite 4 hybrid (dense) for llama.cpp's granitehybrid: Mamba-2 layers beside attention
layers, changed as llama.cpp's converter does.

- The conv kernel as [channels, kernel] (Hugging Face stores [C, 1, K], mlx-lm [C, K, 1]).
- A = -exp(A_log) and D as [heads, 1]; dt_bias is ssm_dt.bias; the gated norm as
  [groups, inner / groups].
- shared_mlp.input_linear holds gate then up, output_linear is down: the dense MLP (mlx-lm's
  dense folders have it apart already as mlp.*), or with experts the shared expert; the
  experts themselves are split as Granite MoE's (experts.py).
"""
from __future__ import annotations

import numpy as np

from .qwen35 import ChangedRef


def granite_hybrid_refs(config: dict, refs: list) -> list:
    n_groups = int(config.get("mamba_n_groups") or 1)
    # with experts, shared_mlp is llama.cpp's shared expert; without, the layer's dense MLP
    mlp = "mlp.shared_expert." if (config.get("num_local_experts") or 0) > 0 else "mlp."
    out = []
    for r in refs:
        name, shape = r.name, tuple(r.shape)
        if name.endswith("mamba.conv1d.weight") and len(shape) == 3:
            k = shape[1] if shape[-1] == 1 else shape[-1]
            out.append(ChangedRef(name, r, lambda w: w.reshape(w.shape[0], -1), (shape[0], k)))
        elif name.endswith("mamba.A_log"):
            out.append(ChangedRef(name, r, lambda w: -np.exp(w).reshape(-1, 1), (shape[0], 1)))
        elif name.endswith("mamba.D"):
            out.append(ChangedRef(name, r, lambda w: w.reshape(-1, 1), (shape[0], 1)))
        elif name.endswith("mamba.dt_bias"):
            out.append(ChangedRef(name[: -len("dt_bias")] + "dt_proj.bias", r, lambda w: w,
                                  shape))
        elif name.endswith("mamba.norm.weight"):
            out.append(ChangedRef(name, r, lambda w: w.reshape(n_groups, -1),
                                  (n_groups, shape[0] // n_groups)))
        elif name.endswith("shared_mlp.input_linear.weight"):
            half = shape[0] // 2
            prefix = name[: -len("shared_mlp.input_linear.weight")]
            out.append(ChangedRef(prefix + mlp + "gate_proj.weight", r, lambda w: w[:half],
                                  (half, shape[1])))
            out.append(ChangedRef(prefix + mlp + "up_proj.weight", r, lambda w: w[half:],
                                  (half, shape[1])))
        elif name.endswith("shared_mlp.output_linear.weight"):
            out.append(ChangedRef(name.replace("shared_mlp.output_linear", mlp + "down_proj"),
                                  r, lambda w: w, shape))
        else:
            out.append(r)
    return out


def granite_hybrid_lora(config: dict, module: str, lora_a: np.ndarray, lora_b: np.ndarray
                        ) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """A LoRA pair (llama.cpp's layout) of ``module`` as the base tensors it lands on:
    shared_mlp.input_linear's B split into the gate and up halves (A shared)."""
    mlp = "mlp.shared_expert." if (config.get("num_local_experts") or 0) > 0 else "mlp."
    if module.endswith("shared_mlp.input_linear"):
        prefix, half = module[: -len("shared_mlp.input_linear")], lora_b.shape[0] // 2
        return [(prefix + mlp + "gate_proj", lora_a, lora_b[:half]),
                (prefix + mlp + "up_proj", lora_a, lora_b[half:])]
    if module.endswith("shared_mlp.output_linear"):
        return [(module.replace("shared_mlp.output_linear", mlp + "down_proj"), lora_a, lora_b)]
    return [(module, lora_a, lora_b)]
