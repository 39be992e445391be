"""Engine command lines, built as plain lists (tested by comparing lists; no Qt here).

Each function returns the full argv of a worker: ``python -m engine <command> ... --events -
--quiet``. Settings equal to the engine's own default are left out, so the run record shows
what the user actually chose.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any


def engine_argv(command: str, *args: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "engine", command, *args, "--events", "-", "--quiet"]


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def dataclass_flags(cls, values: dict[str, Any]) -> list[str]:
    """``--flag value`` for each field of ``cls`` whose value differs from its default."""
    out: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name not in values or not f.metadata.get("help"):
            continue
        v = values[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if v == default or v is None:
            continue
        flag = _flag(f)
        if isinstance(v, bool):
            out.append(flag if v else "--no-" + flag[2:])
        elif isinstance(v, (list, tuple)):
            out += [flag, *map(str, v)]
        else:
            out += [flag, _fmt(v)]
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return repr(v) if v != int(v) or abs(v) >= 1e16 else f"{v:g}"
    return str(v)


def train_command(model: str, data: str, name: str, settings: dict[str, Any],
                  config_cls=None, strict: bool = False, machines: str = "",
                  python: str | None = None) -> list[str]:
    """`tailor train --model M --data D --name N [settings...] [--strict] [--ranks N | --hosts
    H]` (strict: any bad line in the dataset stops the run instead of being skipped; machines:
    the Train page's Machines field, see app/machines.py)."""
    from .machines import machines_argv

    if config_cls is None:
        from engine.train.config import TrainConfig as config_cls
    return engine_argv("train", "--model", str(model), "--data", str(data), "--name", name,
                       *dataclass_flags(config_cls, settings), *(["--strict"] if strict else []),
                       *machines_argv(machines), python=python)


def resume_command(name: str, python: str | None = None) -> list[str]:
    """`tailor train --resume NAME` continues from the adapter's last checkpoint."""
    return engine_argv("train", "--resume", name, python=python)


def data_check_command(path: str, model: str | None, preview: int = 0,
                       python: str | None = None) -> list[str]:
    """`tailor data check PATH [--model M] [--preview N]` (N rendered examples in the report)."""
    args = ["check", str(path)]
    if model:
        args += ["--model", str(model)]
    if preview:
        args += ["--preview", str(preview)]
    return engine_argv("data", *args, python=python)


def export_command(adapter: str, quant: str, out: str, adapter_only: bool = False,
                   allow_tokenizer_mismatch: bool = False, imatrix: str | None = None,
                   python: str | None = None) -> list[str]:
    """`tailor export --adapter A --quant Q --out F [--adapter-only]
    [--allow-tokenizer-mismatch] [--imatrix auto|FILE]` (the mismatch flag: write with the
    closest llama.cpp pre-tokenizer when none reproduces the model's; ``imatrix``: "auto"
    computes an importance matrix over the adapter's training data, or a matrix file)."""
    args = ["--adapter", adapter, "--quant", quant, "--out", str(out)]
    if adapter_only:
        args.append("--adapter-only")
    if allow_tokenizer_mismatch:
        args.append("--allow-tokenizer-mismatch")
    if imatrix:
        args += ["--imatrix", str(imatrix)]
    return engine_argv("export", *args, python=python)


def export_types_command(model: str, python: str | None = None) -> list[str]:
    """`tailor export --list-types --model DIR`: every GGUF type with its expected size for
    the model (an adapter's GGUF has its base's size)."""
    return engine_argv("export", "--list-types", "--model", str(model), python=python)


def ollama_command(gguf: str, name: str, system: str = "", host: str = "",
                   modelfile_dir: str = "", replace: bool = False,
                   python: str | None = None) -> list[str]:
    args = ["--gguf", str(gguf), "--name", name]
    if replace:
        args.append("--replace")
    if system:
        args += ["--system", system]
    if host:
        args += ["--host", host]
    if modelfile_dir:
        args += ["--modelfile-dir", str(modelfile_dir)]
    return engine_argv("ollama", *args, python=python)


def ollama_status_command(host: str = "", python: str | None = None) -> list[str]:
    return engine_argv("ollama", "status", *(["--host", host] if host else []), python=python)


def generate_command(model: str, prompt: str, adapter: str = "", max_tokens: int = 256,
                     system: str = "", temperature: float = 0.0,
                     python: str | None = None) -> list[str]:
    args = ["--prompt", prompt, "--max-tokens", str(max_tokens)]
    if system:
        args += ["--system", system]
    if temperature:  # 0 (greedy) is the engine's default
        args += ["--temperature", _fmt(float(temperature))]
    if adapter:
        args = ["--adapter", adapter, *args]
    else:
        args = ["--model", str(model), *args]
    return engine_argv("generate", *args, python=python)


def serve_command(model: str = "", adapter: str = "", python: str | None = None) -> list[str]:
    """`tailor generate --serve`: the Playground's long-lived worker for one base (``adapter``:
    its base, loaded as it was trained, with the adapter ready). Its events always go to
    stdout, so no ``--events -`` (the runner would also watch stdin for ``stop`` and take the
    requests)."""
    args = ["--adapter", adapter] if adapter else ["--model", str(model)]
    return [python or sys.executable, "-m", "engine", "generate", "--serve", *args, "--quiet"]


def model_info_command(model: str, python: str | None = None) -> list[str]:
    return engine_argv("model", "info", str(model), python=python)


def model_download_command(repo_id: str, python: str | None = None) -> list[str]:
    return engine_argv("model", "download", repo_id, python=python)
