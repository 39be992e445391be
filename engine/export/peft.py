"""A library adapter in Hugging Face PEFT's format: ``adapter_model.safetensors`` and
``adapter_config.json``, loadable with ``PeftModel.from_pretrained(base, folder)`` on the
original base model (and by servers that read PEFT adapters: vLLM, TGI, llama.cpp's converter).

The conventions, as peft's LoRA layer and its state-dict saver define them:
- keys ``base_model.model.<module path>.lora_A.weight`` (r x in) and ``.lora_B.weight``
  (out x r): torch ``nn.Linear`` weights, so mlx-lm's ``lora_a`` (in x r) and ``lora_b``
  (r x out) are transposed;
- PEFT adds ``scaling * B A x`` with scaling = lora_alpha / r, or lora_alpha / sqrt(r) with
  ``use_rslora``; mlx-lm adds ``scale * (x A) B``: lora_alpha = scale * r (or * sqrt(r));
- DoRA: ``<module path>.lora_magnitude_vector`` (out,) is mlx-lm's ``m``; both divide it by the
  row norms of W + scaling * B A, taken without gradient, so the magnitudes carry over as they are.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

from ..atomic import atomic_path, save_safetensors, write_json_atomic
from ..events import Job, TailorError
from ..results import PeftExportResult

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
PREFIX = "base_model.model."  # PeftModelForCausalLM wraps the transformers model
MLX_SUFFIXES = {"lora_a": "lora_A.weight", "lora_b": "lora_B.weight",
                "m": "lora_magnitude_vector"}


def peft_alpha(scale: float, rank: int, rslora: bool, settings: dict) -> float:
    """PEFT's lora_alpha for mlx-lm's ``scale``: the run's own alpha where it gives the same
    scale (32, not 31.999999), else derived from the scale."""
    divisor = math.sqrt(rank) if rslora else rank
    alpha = settings.get("alpha")
    if (isinstance(alpha, (int, float)) and settings.get("rank") == rank
            and math.isclose(alpha / divisor, scale, rel_tol=1e-9)):
        return float(alpha)
    return scale * divisor


def group_tensors(weights: dict, source: Path) -> dict[str, dict]:
    """mlx-lm's adapter tensors by module path: {path: {"lora_a": array, "lora_b": ..., "m": ...}};
    refuses what PEFT's Linear LoRA has no form for."""
    modules: dict[str, dict] = {}
    for key, value in weights.items():
        path, _, leaf = key.rpartition(".")
        if leaf not in MLX_SUFFIXES:
            raise TailorError(f"{source}: tensor {key} is not a LoRA/DoRA tensor; PEFT's LoRA "
                              "format has no place for it",
                              hint="export the fused model instead (tailor fuse, or a GGUF)")
        if leaf != "m" and value.ndim != 2:
            raise TailorError(f"{source}: {key} has shape {list(value.shape)}: a "
                              "mixture-of-experts (switch) adapter, which PEFT's LoRA format "
                              "has no equivalent for",
                              hint="export the fused model instead (tailor fuse, or a GGUF)")
        modules.setdefault(path, {})[leaf] = value
    for path, parts in modules.items():
        if "lora_a" not in parts or "lora_b" not in parts:
            raise TailorError(f"{source}: {path} has {', '.join(sorted(parts))} but not both "
                              "lora_a and lora_b", hint="train the adapter again")
    if not modules:
        raise TailorError(f"{source} holds no LoRA tensors", hint="train the adapter again")
    return modules


def check_base_has_modules(modules, base_dir: Path) -> set[str]:
    """Every adapted module is a linear layer of the base under the same name (the names PEFT
    will look up); returns the base's weight names."""
    from .safetensors_stream import list_tensors

    base_names = {t.name for t in list_tensors(base_dir)}
    for path in modules:
        if f"{path}.weight" not in base_names:
            raise TailorError(f"the adapter's module {path} is not in the base model "
                              f"{base_dir} under that name ({path}.weight), so PEFT could not "
                              "attach it", hint="export the fused model instead")
    return base_names


def target_modules(modules: dict, base_names: set[str]) -> list[str]:
    """PEFT's target_modules: the leaf names (q_proj, ...) when every base module of those names
    is adapted, else the full module paths (an adapter on the last N blocks only)."""
    leaves = sorted({p.rsplit(".", 1)[-1] for p in modules})
    candidates = {n[:-len(".weight")] for n in base_names if n.endswith(".weight")}
    matching = {c for c in candidates if c.rsplit(".", 1)[-1] in leaves}
    return leaves if matching == set(modules) else sorted(modules)


def peft_config(adapter_config: dict, modules: dict, base_names: set[str], settings: dict,
                base_model: str) -> dict:
    """PEFT's LoraConfig as JSON; per-module ranks as ``rank_pattern``/``alpha_pattern``."""
    params = adapter_config.get("lora_parameters") or {}
    scale = float(params.get("scale", 20.0))
    rslora = bool(settings.get("rslora", False))
    ranks = {p: int(parts["lora_a"].shape[1]) for p, parts in modules.items()}
    rank = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common
    alpha = peft_alpha(scale, rank, rslora, settings)
    odd = {p: r for p, r in ranks.items() if r != rank}
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "revision": None, "r": rank, "lora_alpha": alpha,
        "lora_dropout": float(params.get("dropout", 0.0)),
        "target_modules": target_modules(modules, base_names), "bias": "none",
        "use_rslora": rslora, "use_dora": adapter_config.get("fine_tune_type") == "dora",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
        "rank_pattern": odd,
        "alpha_pattern": {p: peft_alpha(scale, r, rslora, {}) for p, r in odd.items()},
    }


def peft_tensors(modules: dict) -> dict:
    """PEFT's state dict: torch Linear layouts (transposed), magnitudes as they are."""
    import mlx.core as mx

    out = {}
    for path, parts in sorted(modules.items()):
        for leaf, value in parts.items():
            value = mx.contiguous(value.T) if leaf != "m" else value
            out[f"{PREFIX}{path}.{MLX_SUFFIXES[leaf]}"] = value
    mx.eval(list(out.values()))
    return out


def check_out_folder(out: Path) -> bool:
    """Refuse an ``out`` that is a file or a folder with anything in it; True when it is an
    empty folder (replaced in one rename)."""
    if out.is_dir():
        if any(out.iterdir()):
            raise TailorError(f"{out} already exists and is not empty; it was left untouched",
                              hint="choose a new folder (or an empty one) for the PEFT adapter")
        return True
    if out.exists() or out.is_symlink():
        raise TailorError(f"{out} already exists and is not a folder; it was left untouched",
                          hint="choose a new folder for the PEFT adapter")
    return False


def refuse_kind(name: str, adapter_config: dict) -> None:
    kind = adapter_config.get("fine_tune_type", "lora")
    if kind == "full":
        raise TailorError(f"adapter {name!r} is a full fine-tune: it changed every weight and "
                          "has no low-rank matrices, so there is no PEFT adapter to write",
                          hint="write the whole model instead: tailor fuse --adapter "
                               f"{name} --out DIR")
    if kind not in ("lora", "dora"):
        raise TailorError(f"adapter {name!r} is a {kind} fine-tune; PEFT export writes LoRA "
                          "and DoRA adapters", hint="export the fused model instead")


def export_peft(name: str, out: Path | str, *, job: Job) -> PeftExportResult:
    """Write the library adapter ``name`` as a PEFT adapter folder ``out`` (new, or empty);
    returns what was written. Raises TailorError for an adapter PEFT cannot represent."""
    import mlx.core as mx

    from ..fuse import check_output_outside, resolve_adapter
    from ..library import reading
    from ..models.safetensors_check import check_adapter_file

    t0 = time.time()
    out = Path(out).expanduser()
    with reading(name, out, job.name):
        info, adapter_config, base_dir = resolve_adapter(name)
        refuse_kind(info.name, adapter_config)
        check_output_outside(out, base_dir)
        check_output_outside(out, info.path, what="PEFT folder")
        replace_empty = check_out_folder(out)
        check_adapter_file(info.weights)
        modules = group_tensors(mx.load(str(info.weights)), info.weights)
        base_names = check_base_has_modules(modules, base_dir)
        settings = info.manifest.get("settings") or {}
        base = info.manifest.get("base_model") or {}
        config = peft_config(adapter_config, modules, base_names, settings,
                             base.get("repo_id") or str(base_dir))
        job.started({"adapter": info.name, "format": "peft", "out": str(out)},
                    {"base_model": str(base_dir)})
        progress = job.progress("export")
        progress(0, 2, "converting the tensors")
        tensors = peft_tensors(modules)
        job.cancel.raise_if_cancelled()
        size = sum(v.nbytes for v in tensors.values())
        progress(1, 2, "writing the PEFT adapter")
        with atomic_path(out, overwrite=replace_empty, needed_bytes=size) as tmp:
            tmp.mkdir()
            save_safetensors(tmp / PEFT_WEIGHTS, tensors, metadata={"format": "pt"})
            write_json_atomic(tmp / PEFT_CONFIG, config)
        progress(2, 2, "done")
    notes = []
    if base.get("quantized") or _quantized(base_dir):
        notes.append("the base is quantized (MLX): load the adapter on the full-precision "
                     "original of this model in PEFT")
    return PeftExportResult(
        path=str(out), adapter=info.name, base_model=config["base_model_name_or_path"],
        rank=config["r"], alpha=config["lora_alpha"], use_rslora=config["use_rslora"],
        use_dora=config["use_dora"], target_modules=config["target_modules"],
        tensor_count=len(tensors), size_bytes=size, notes=notes,
        seconds=round(time.time() - t0, 3))


def _quantized(base_dir: Path) -> bool:
    from ..models.load import read_config

    config = read_config(base_dir)
    return bool(config.get("quantization") or config.get("quantization_config"))
