"""An export's plan: everything it can be refused for checked, cheapest first, and its size,
before any work (see gguf_export.py for the stages after it)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import check_free_space
from ..events import TailorError
from .architectures import arch_info, is_mlx_quantized
from .mixtures import BYTES_PER_WEIGHT, QUANTS
from .quant_types import imatrix_warning
from .safetensors_stream import list_tensors
from .vocab import check_pre_tokenizer


def _source_params(folder: Path) -> int:
    return sum(int(np.prod(r.shape)) for r in list_tensors(folder))


# Room for the GGUF header, metadata and vocabulary beside the tensor data (a 152k-token
# BPE vocabulary with its merges takes ~8 MB).
METADATA_BYTES = 32 << 20


def _gguf_bytes(base_dir: Path, config: dict, quant: str, params: int, quantized: bool) -> int:
    """The file's size: its tensors as the writer plans them (each tensor's type by the
    file type's mixture) plus METADATA_BYTES. An MLX-quantized folder's packed shapes cannot
    be planned before dequantizing: the table's bytes per weight there. (The table's figure
    alone misjudged small models by 2x: a tied embedding in Q6_K/Q8_0 outweighs the rest.)"""
    if quantized:
        return int(params * BYTES_PER_WEIGHT[quant]) + METADATA_BYTES
    from .write import plan_tensors

    planned = plan_tensors(arch_info(config, str(base_dir)), list_tensors(base_dir), quant)
    return sum(p.nbytes for p in planned) + METADATA_BYTES


def _resolve_source(source):
    """('adapter', AdapterInfo) or ('model', Path)."""
    from ..library import AdapterInfo

    if isinstance(source, AdapterInfo):
        return "adapter", source
    if isinstance(source, Path):
        return "model", source.expanduser()
    return "adapter", str(source)


@dataclass
class ExportPlan:
    """What an export will read and write, decided (and every refusal made) before any work."""

    kind: str                      # "adapter" or "model"
    source_name: str
    out: Path
    quant: str
    adapter_only: bool
    base_dir: Path
    info: Any = None               # the adapter's AdapterInfo
    adapter_config: dict | None = None
    quantized: bool = False        # an MLX-quantized folder: dequantized first
    needed_bytes: int = 0
    warning: str | None = None     # logged when the export starts (Q2_K/Q3_K: no imatrix)


def plan_export(source, out: Path | str, quant: str, *, adapter_only: bool = False,
                free_bytes_fn=None, allow_tokenizer_mismatch: bool = False,
                check_tokenizer: bool = True) -> ExportPlan:
    """Check everything an export can be refused for, cheapest first, and size it: the quant,
    the file name, the source, the output's place, the architecture, the free space and
    (``check_tokenizer``) the pre-tokenizer. Raises TailorError; writes nothing."""
    from ..fuse import check_output_outside, resolve_adapter
    from ..models.load import read_config
    from ..models.resolve import check_model_folder
    from .lora_gguf import check_lora_exportable

    quant = str(quant).lower()
    if quant not in QUANTS:
        raise TailorError(f"unknown --quant {quant!r}; choose one of {', '.join(QUANTS)}",
                          hint="`tailor export --help` says what each type is for")
    out = Path(out).expanduser()
    if out.suffix.lower() != ".gguf":
        raise TailorError(f"the output file {out} should end in .gguf")
    kind, src = _resolve_source(source)
    info = adapter_config = None
    if kind == "adapter":
        info, adapter_config, base_dir = resolve_adapter(src)
        from ..models.safetensors_check import check_adapter_file

        check_adapter_file(info.weights)  # a damaged adapter is named before any work
        if adapter_only:
            check_lora_exportable(info, adapter_config)
    else:
        if adapter_only:
            raise TailorError("--adapter-only needs --adapter NAME, not a model folder")
        base_dir = src
        check_model_folder(base_dir)
    check_output_outside(out, base_dir, "output file")
    if info is not None:
        check_output_outside(out, info.path, "output file")
    if out.exists():
        raise TailorError(f"{out} already exists; it was left untouched",
                          hint="choose another file name or remove the old file first")
    # the nearest folder that exists: where the missing ones are made, and whose disk counts
    folder = next((p for p in out.parents if p.exists()), Path("."))
    if not folder.is_dir():
        raise TailorError(f"{folder} is a file, not a folder, so {out} cannot be written; "
                          "it was left untouched", hint="choose an --out inside a folder")
    base_config = read_config(base_dir)
    arch_info(base_config, str(base_dir))  # refuse unsupported models up front
    quantized = is_mlx_quantized(base_config)
    # packed 4-bit weights count 8 to a uint32: a generous estimate of the real parameters
    params = _source_params(base_dir) * (8 if quantized else 1)
    if adapter_only:
        needed = int(info.weights.stat().st_size * 1.1) + (1 << 20)
    else:
        needed = _gguf_bytes(base_dir, base_config, quant, params, quantized)
        if kind == "adapter" or quantized:
            needed += params * 4  # the fused/dequantized model, in a temporary folder
    check_free_space(folder, needed,
                     what=f"the {quant.upper()} GGUF file", free_bytes_fn=free_bytes_fn)
    if not adapter_only and check_tokenizer:  # before minutes of fusing
        check_pre_tokenizer(base_dir, allow_tokenizer_mismatch=allow_tokenizer_mismatch)
    return ExportPlan(kind, str(getattr(src, "name", src)), out, quant, adapter_only, base_dir,
                      info, adapter_config, quantized, needed,
                      warning=None if adapter_only else imatrix_warning(quant))


def expected_sizes(base_dir: Path, quants) -> dict[str, int]:
    """The expected size of each type's GGUF of the model at ``base_dir`` (an adapter's fused
    model has its base's shapes), for `tailor export --list-types` and the Export page: the
    tensors as the writer plans them (_gguf_bytes) and, for the header and vocabulary, half
    of tokenizer.json's size (the fixtures' GGUF metadata is 0.55x of it). Raises TailorError
    for a model that does not export."""
    from ..models.load import read_config

    config = read_config(base_dir)
    arch_info(config, str(base_dir))
    quantized = is_mlx_quantized(config)
    params = _source_params(base_dir) * (8 if quantized else 1)
    vocab = Path(base_dir) / "tokenizer.json"
    meta = vocab.stat().st_size // 2 if vocab.is_file() else 1 << 20
    return {q: _gguf_bytes(base_dir, config, q, params, quantized) - METADATA_BYTES + meta
            for q in quants}
