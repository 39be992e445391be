"""`tailor model info PATH_OR_ID` and `tailor model download REPO_ID`."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..capabilities import GGUF_MODEL_TYPES, gguf_support
from ..cli_options import add_action
from ..events import Finished, TailorError
from ..results import ModelDownload, ModelInfo
from ..sizes import format_bytes
from .folder_files import model_files, readable_view
from .load import custom_code_note, read_config
from .safetensors_check import check_model_weights
from .resolve import HUB_TIMEOUT, resolve_model


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    info = add_action(sub, "info", help="architecture, parameters, memory, GGUF export support")
    info.add_argument("model", help="a model folder or Hugging Face repo id")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_timeout(info)
    dl = add_action(sub, "download", help="fetch a model from Hugging Face into the local cache "
                                         "(safetensors, configs and tokenizer only)")
    dl.add_argument("repo_id")
    dl.add_argument("--revision", default=None, help="branch, tag or commit")
    _add_timeout(dl)


def _add_timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=_seconds, default=HUB_TIMEOUT,
                   help="seconds the Hugging Face Hub may stay silent (connecting, answering, "
                        f"between downloaded bytes) before Tailor gives up (default "
                        f"{HUB_TIMEOUT:g})")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive number of seconds")
    return value


def model_info(folder: Path) -> dict:
    """What a user wants to know before training on ``folder`` (weights are not read)."""
    from mlx_lm.utils import get_total_parameters, load_model

    cfg = read_config(folder)
    text = cfg.get("text_config", cfg)
    arch = cfg.get("model_type", "?")
    check_model_weights(folder)  # MLX's loader turns a bad header into a raw RuntimeError
    try:
        with readable_view(folder) as view:  # mlx-lm reads generation_config.json by name
            model, _ = load_model(view, lazy=True, trust_remote_code=False)
            params = int(get_total_parameters(model))
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise TailorError(f"cannot read {folder}: {e}",
                          hint="this architecture may not be supported by mlx-lm") from e
    files = model_files(folder)  # files linked out of the folder are not read
    weight_bytes = sum(p.stat().st_size for p in files.glob("*.safetensors"))
    q = cfg.get("quantization") or cfg.get("quantization_config")
    tok_cfg = files.get("tokenizer_config.json")
    has_template = bool(files.get("chat_template.jinja") or files.get("chat_template.json"))
    exports, why_not = gguf_support(cfg)
    if tok_cfg:
        has_template = has_template or "chat_template" in json.loads(tok_cfg.read_text("utf-8"))
    return {"path": str(folder), "architecture": arch,
            "architectures": cfg.get("architectures", []), "parameters": params,
            "layers": text.get("num_hidden_layers"), "hidden_size": text.get("hidden_size"),
            "vocab_size": text.get("vocab_size"),
            "quantization": {"bits": q.get("bits"), "group_size": q.get("group_size")} if q
            else None,
            "weight_bytes": weight_bytes,
            "memory_to_load_gb": round(weight_bytes / 1e9, 3),
            "chat_template": has_template,
            "gguf_export": exports,
            "gguf_export_reason": why_not,  # why not, in one sentence ("" when it exports)
            "gguf_supported_architectures": list(GGUF_MODEL_TYPES),
            "skipped_files": [str(f) for f in files.skipped],
            "notes": [n for n in (custom_code_note(cfg),) if n]}


def run(args: argparse.Namespace, job) -> int:
    out = sys.stdout if args.events != "-" else sys.stderr
    if args.action == "download":
        from .resolve import _snapshot, check_model_folder

        folder = _snapshot(args.repo_id, job.report, job.cancel, args.revision, job.name,
                           timeout=args.timeout)
        check_model_folder(folder)
        print(folder, file=out)
        job.report(Finished(job=job.name, result=ModelDownload(path=str(folder))))
        return 0
    folder = resolve_model(args.model, report=job.report, cancel=job.cancel, job=job.name,
                           timeout=args.timeout)
    info = model_info(folder)
    if args.json:
        print(json.dumps(info, indent=2), file=out)
    else:
        print(format_model_info(folder, info), file=out)
    job.report(Finished(job=job.name, result=ModelInfo.from_dict(info)))
    return 0


def _gguf_line(info: dict) -> str:
    if info["gguf_export"]:
        return "supported"
    reason = info.get("gguf_export_reason") or "not in the exporter's table"
    if "supported:" not in reason:  # the generic reason lists them already
        reason += f" (supported: {', '.join(info['gguf_supported_architectures'])})"
    return f"not supported: {reason}"


def format_model_info(folder: Path, info: dict) -> str:
    """``tailor model info``'s text form (without --json)."""
    q = info["quantization"]
    return (f"{folder}\n  architecture  {info['architecture']} "
            f"({', '.join(info['architectures'])})\n"
            f"  parameters    {info['parameters'] / 1e6:.2f} M, {info['layers']} layers, "
            f"hidden {info['hidden_size']}, vocabulary {info['vocab_size']}\n"
            f"  weights       {format_bytes(info['weight_bytes'])} on disk"
            + (f", {q['bits']}-bit quantized" if q else "") + "\n"
            f"  chat template {'yes' if info['chat_template'] else 'no'}\n"
            f"  GGUF export   {_gguf_line(info)}"
            + "".join(f"\n  not read      {f}" for f in info["skipped_files"])
            + "".join(f"\n  note          {n}" for n in info["notes"]))
