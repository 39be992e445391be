"""A LoRA adapter alone as a GGUF adapter file (llama.cpp `--lora`, Ollama `ADAPTER`).

Layout as llama.cpp's `convert_lora_to_gguf.py` writes it: `general.type` = adapter,
`adapter.type` = lora, `adapter.lora.alpha`; tensors `<base name>.lora_a` (rank x in) and
`.lora_b` (out x rank). mlx-lm computes y = W x + scale * (x A) B, llama.cpp adds
(alpha / rank) * B A x, so alpha = scale * rank. DoRA rescales the fused weight's columns and has
no GGUF form: those adapters are fused instead.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..events import TailorError
from .architectures import PERMUTED_QK, ArchInfo, arch_info, gguf_name
from .row_transforms import permute_rows
from .safetensors_stream import list_tensors


def lora_alpha(adapter_config: dict) -> tuple[float, int]:
    p = adapter_config.get("lora_parameters") or {}
    rank = int(p.get("rank", 8))
    scale = float(p.get("scale", 20.0))
    return scale * rank, rank


def check_lora_exportable(info, adapter_config: dict) -> None:
    kind = adapter_config.get("fine_tune_type", "lora")
    if kind == "dora":
        raise TailorError(f"adapter {info.name!r} is a DoRA adapter; DoRA cannot be written as a "
                          "GGUF LoRA adapter (llama.cpp and Ollama apply plain LoRA only)",
                          hint="export the fused model instead: leave out --adapter-only")
    if kind != "lora":
        raise TailorError(f"adapter {info.name!r} is a {kind} fine-tune, not a LoRA adapter",
                          hint="export the fused model instead: leave out --adapter-only")


def write_lora_gguf(info, adapter_config: dict, base_dir: Path, out_tmp: Path, quant: str):
    """Write the adapter GGUF; returns (ArchInfo, planned tensors, metadata)."""
    import gguf

    from .write import PlannedTensor
    from ..models.load import read_config

    check_lora_exportable(info, adapter_config)
    a: ArchInfo = arch_info(read_config(base_dir), str(base_dir))
    if a.arch == "qwen3next":
        raise TailorError(f"adapter {info.name!r}: a Qwen3-Next LoRA cannot be written as a GGUF "
                          "adapter yet (llama.cpp splits its fused in_proj_qkvz, and the adapter's "
                          "tensors would need the same split)",
                          hint="export the fused model instead: leave out --adapter-only")
    alpha, rank = lora_alpha(adapter_config)
    name_map = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == a.arch), a.n_layers)
    refs = {r.name: r for r in list_tensors(info.path)}
    ggml_type = gguf.GGMLQuantizationType.F16 if quant in ("f16", "bf16") else \
        gguf.GGMLQuantizationType.F32
    tensors = []
    scales = None  # Gemma 4's per-expert scales, read from the base once
    for key in sorted(refs):
        m = re.match(r"(.*)\.lora_a$", key)
        if not m:
            continue
        module = m.group(1)
        if module + ".lora_b" not in refs:
            raise TailorError(f"{info.weights}: {key} has no matching lora_b")
        la, lb = refs[key].read(), refs[module + ".lora_b"].read()
        if la.ndim == 2:
            la, lb = la.T, lb.T  # mlx (in, r) -> (r, in), (r, out) -> (out, r)
        # else expert layers: mlx (experts, r, in) and (experts, out, r), llama.cpp's layout
        if a.arch in ("qwen35", "qwen35moe"):  # value heads reordered as in the base GGUF
            from .qwen35 import qwen35_lora

            module, la, lb = qwen35_lora(a.config, module, la, lb)
        pairs = [(module, la, lb)]
        if a.arch == "gemma4":  # expert gate + up LoRA as one on llama.cpp's gate_up tensor
            from .gemma4 import expert_scales, gemma4_expert_lora

            scales = scales or expert_scales(list_tensors(base_dir))
            pairs = gemma4_expert_lora(module, la, lb, lambda m: (
                refs[m + ".lora_a"].read(), refs[m + ".lora_b"].read()), scales)
        if a.arch == "granitehybrid":  # its fused shared MLP lands on two base tensors
            from .granite_hybrid import granite_hybrid_lora

            pairs = granite_hybrid_lora(a.config, module, la, lb)
        for module, la, lb in pairs:
            base = gguf_name(a, name_map, module + ".weight")
            if base is None:
                continue
            if a.arch in PERMUTED_QK and module.endswith("q_proj"):
                lb = permute_rows(lb, a.n_head)
            elif a.arch in PERMUTED_QK and module.endswith("k_proj"):
                lb = permute_rows(lb, a.n_kv_head)
            tensors.append((base + ".lora_a", np.ascontiguousarray(la)))
            tensors.append((base + ".lora_b", np.ascontiguousarray(lb)))
    if not tensors:
        raise TailorError(f"{info.weights} holds no LoRA tensors",
                          hint="train the adapter again, or export the fused model")
    w = gguf.GGUFWriter(str(out_tmp), a.arch)
    planned = []
    try:
        w.add_type(gguf.GGUFType.ADAPTER)
        w.add_name(info.name)
        w.add_string(gguf.Keys.Adapter.TYPE, "lora")
        w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        for name, arr in tensors:
            data = arr.astype(np.float16) if ggml_type == gguf.GGMLQuantizationType.F16 else arr
            w.add_tensor(name, data)
            planned.append(PlannedTensor(name, arr.shape, ggml_type, data.nbytes))
        w.write_header_to_file(path=Path(out_tmp))
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return a, planned, {"architecture": a.arch, "adapter": info.name, "alpha": alpha,
                        "rank": rank, "lora_scale": alpha / rank}
