"""`tailor fuse`: merge a library adapter into its base model and write a standard Hugging Face
folder (sharded safetensors + index, config, the base's own tokenizer files and chat template,
generation config) that mlx-lm and transformers load.

The merge is mlx-lm's own: every LoRA/DoRA layer's ``fuse()``; a quantized (QLoRA) base is
dequantized, so the result is full precision. The output folder is written under a temporary
name and renamed; it is never the base model's folder nor inside it.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

from .atomic import atomic_path, check_free_space
from .events import CancelToken, Finished, Job, Reporter, TailorError, as_job, null_reporter
from .models.folder_files import model_files
from .results import FuseResult

# Files copied byte for byte from the base, so the fused model tokenizes exactly as trained.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="an adapter in the library")
    p.add_argument("--out", required=True, help="the new folder to write (must not exist)")


def run(args: argparse.Namespace, job) -> int:
    out = fuse_adapter(args.adapter, Path(args.out), job=job)
    job.report(Finished(job=job.name, result=FuseResult(path=str(out))))
    print(f"fused model written to {out}", file=sys.stderr if args.events == "-" else sys.stdout)
    return 0


def resolve_adapter(name_or_info):
    """(AdapterInfo, adapter_config dict, base folder) for a name or an AdapterInfo."""
    from .library import AdapterInfo, get_adapter

    info = name_or_info if isinstance(name_or_info, AdapterInfo) else get_adapter(str(name_or_info))
    cfg_path = info.path / "adapter_config.json"
    if not cfg_path.exists() or not info.weights.exists():
        raise TailorError(f"adapter {info.name!r} ({info.path}) has no adapter_config.json or "
                          "adapters.safetensors; it may still be training or was not saved",
                          hint="pick a finished adapter from `tailor library list`")
    try:
        adapter_config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TailorError(f"{cfg_path} is unreadable: {e}") from e
    base = info.base_model or adapter_config.get("model", "")
    if not base:
        raise TailorError(f"adapter {info.name!r} does not name its base model "
                          f"({info.path / 'manifest.json'})")
    base_dir = Path(base).expanduser()
    from .models.resolve import check_model_folder

    check_model_folder(base_dir)
    return info, adapter_config, base_dir


def check_output_outside(out: Path, base_dir: Path, what: str = "output") -> None:
    """Refuse an output that is the base model's folder or inside it (the base is sacred)."""
    out_r, base_r = Path(out).expanduser().resolve(), Path(base_dir).resolve()
    if out_r == base_r or base_r in out_r.parents:
        raise TailorError(f"the {what} {out} is inside the base model folder {base_dir}; "
                          "Tailor never writes into a base model's folder",
                          hint="choose a folder outside the base model, e.g. in your home folder")


def fused_model(info, adapter_config: dict, base_dir: Path):
    """(model, config) of the base with the adapter merged in (dequantized when it was quantized)."""
    from mlx.utils import tree_unflatten
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import dequantize_model

    from .models.load import load_model

    from .models.safetensors_check import check_adapter_file

    model, _tokenizer, config = load_model(base_dir)
    check_adapter_file(info.weights)  # a damaged adapter: its name, not MLX's RuntimeError
    with contextlib.redirect_stdout(sys.stderr):
        load_adapters(model, str(info.path))
    fused = [(n, m.fuse(dequantize=True)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if config.get("quantization") or config.get("quantization_config"):
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    return model, config


def write_hf_folder(model, config: dict, base_dir: Path, out_dir: Path) -> list[str]:
    """Write weights (mlx-lm's sharding and index), config and the base's tokenizer files.

    Returns the tokenizer files not copied because they link out of the base folder (each
    "name (reason)"); see engine/models/folder_files.py.
    """
    from mlx_lm.utils import save_config

    from .atomic import save_model_shards

    save_model_shards(out_dir, model)  # mlx-lm's save_model, but a full disk raises OSError
    save_config(dict(config), config_path=out_dir / "config.json")
    files = model_files(base_dir)
    for name in TOKENIZER_FILES:
        src = files.get(name)
        if src is not None:
            shutil.copy2(src, out_dir / name)
    return [str(s) for s in files.skipped if s.name in TOKENIZER_FILES]


def fuse_adapter(name_or_info, out_dir: Path | str, report: Reporter = null_reporter,
                 cancel: CancelToken | None = None, job: Job | str = "fuse",
                 free_bytes_fn=None) -> Path:
    """Merge the adapter into its base and write a Hugging Face folder at ``out_dir``; return
    it. ``job``: a Job, or a name with ``report``/``cancel`` (the runner reports the end).
    Holds the adapter's and the output's locks throughout (engine/locks.py)."""
    from .library import reading

    job = as_job(job, report, cancel)
    with reading(name_or_info, Path(out_dir).expanduser(), job.name):
        return _fuse(name_or_info, out_dir, job, free_bytes_fn)


def _fuse(name_or_info, out_dir: Path | str, job: Job, free_bytes_fn) -> Path:
    from mlx.utils import tree_flatten

    info, adapter_config, base_dir = resolve_adapter(name_or_info)
    out_dir = Path(out_dir).expanduser()
    check_output_outside(out_dir, base_dir)
    if out_dir.exists():
        raise TailorError(f"{out_dir} already exists; it was left untouched",
                          hint="choose a new folder name or remove the old one first")
    # Before loading anything: the fused weights take about the base's size (4x for a 4-bit
    # base, which is dequantized); checked again with the exact size before writing.
    base_bytes = sum(p.stat().st_size for p in model_files(base_dir).glob("*.safetensors"))
    from .models.load import read_config

    factor = 4 if read_config(base_dir).get("quantization") else 1
    check_free_space(out_dir.parent, base_bytes * factor, what="the fused model",
                     free_bytes_fn=free_bytes_fn)
    job.started({"adapter": info.name, "out": str(out_dir)}, {"base_model": str(base_dir)})
    model_files(base_dir).report_skipped(job.report, job.name)
    progress = job.progress("fuse")
    progress(0, 3, "loading the base model and adapter")
    model, config = fused_model(info, adapter_config, base_dir)
    job.cancel.raise_if_cancelled()
    weights = dict(tree_flatten(model.parameters()))
    check_free_space(out_dir.parent, sum(v.nbytes for v in weights.values()),
                     what="the fused model", free_bytes_fn=free_bytes_fn)
    progress(1, 3, "writing the fused model")
    with atomic_path(out_dir, needed_bytes=sum(v.nbytes for v in weights.values())) as tmp:
        tmp.mkdir()
        skipped = write_hf_folder(model, config, base_dir, tmp)
        job.cancel.raise_if_cancelled()
        (tmp / "tailor_fused.json").write_text(json.dumps(
            {"adapter": info.name, "adapter_path": str(info.path), "base_model": str(base_dir),
             "fine_tune_type": adapter_config.get("fine_tune_type", "lora"),
             "skipped_base_files": skipped}, indent=2))
    progress(3, 3, "done")
    return out_dir
