"""`tailor ollama`: hand a GGUF or a library adapter to Ollama, or write a Modelfile folder.

    tailor ollama --gguf FILE --name MODEL [--quant q4_K_M|q8_0] [--system TEXT] ...
    tailor ollama --adapter NAME --name MODEL [--quant TYPE]     # fuse + export + verify + create
    tailor ollama --adapter NAME --adapter-only --base MODEL --name MODEL
    tailor ollama status [--host URL]

With ``--gguf``, ``--quant`` asks Ollama to quantize an F16/BF16/F32 file; with ``--adapter`` it
is the export's GGUF type. Without a reachable Ollama (or with ``--offline``) the folder (GGUF +
Modelfile + README.txt) is written and the one ``ollama create`` command printed;
``--modelfile-dir DIR`` chooses that folder, and writes it also when Ollama is reachable.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Optional

from .. import paths
from ..capabilities import gguf_architecture
from ..configs import add_dataclass_args, opt, validate_ranges
from ..events import Finished, Log, Started, TailorError
from .client import OllamaClient
from .handoff import (JOB, ModelSettings, check_adapter_architecture, send_adapter, send_gguf,
                      write_folder)
from .names import parse_model_name


# Optional[...] rather than "X | None": engine.configs._base_type does not unwrap PEP 604 unions
# (str(types.UnionType) is "<class 'types.UnionType'>"), which would make every flag a string.
@dataclass
class OllamaConfig:
    gguf: Optional[str] = opt(None, "the GGUF file to hand to Ollama (it is never modified)")
    adapter: Optional[str] = opt(None, "a library adapter: fuse, export and verify a GGUF, then hand "
                                    "it to Ollama")
    name: Optional[str] = opt(None, "the Ollama model name: lowercase, [namespace/]model[:tag]")
    quant: Optional[str] = opt(None, "with --gguf: let Ollama quantize an F16/BF16/F32 file "
                                  "(q4_K_M, q8_0); with --adapter: the exported GGUF type")
    system: Optional[str] = opt(None, "a default system prompt for the model")
    temperature: Optional[float] = opt(None, "default sampling temperature", minimum=0.0,
                                    maximum=5.0)
    num_ctx: Optional[int] = opt(None, "context window Ollama allocates (tokens)", minimum=64,
                              maximum=1048576)
    host: Optional[str] = opt(None, "Ollama address (default: $OLLAMA_HOST or 127.0.0.1:11434)")
    allow_remote: bool = opt(False, "allow a host that is not this machine (the model file is "
                                    "uploaded to it)")
    modelfile_dir: Optional[str] = opt(None, "also write a folder with the GGUF (linked), a Modelfile "
                                             "and a README here (always written when Ollama is "
                                             "not reachable)")
    offline: bool = opt(False, "do not contact Ollama: only write the Modelfile folder")
    replace: bool = opt(False, "replace an Ollama model of the same name (a --modelfile-dir "
                               "folder only when Tailor wrote it)")
    adapter_only: bool = opt(False, "with --adapter: send only the LoRA adapter, on top of --base "
                                    "already in Ollama (llama, qwen2, gemma, gemma2, phi3)")
    base: Optional[str] = opt(None, "with --adapter-only: the Ollama name of the base model")
    timeout: float = opt(30.0, "seconds Ollama may stay silent (connecting, answering, during "
                               "an upload or between progress lines) before Tailor gives up",
                         minimum=0.1)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["create", "status"], default="create",
                        help="create (default): hand the model to Ollama; status: is Ollama "
                             "running, which version, which models")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_dataclass_args(parser, OllamaConfig)


def _config(args: argparse.Namespace) -> OllamaConfig:
    values = {f.name: getattr(args, f.name) for f in fields(OllamaConfig)
              if getattr(args, f.name, None) is not None}
    cfg = OllamaConfig(**values)
    problems = validate_ranges(cfg)
    if problems:
        raise TailorError("; ".join(problems))
    return cfg


def _print(args, text: str, obj: dict) -> None:
    if args.events == "-":  # stdout carries the event stream
        return
    sys.stdout.write((json.dumps(obj, indent=2, ensure_ascii=False) if args.json else text) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace, job, export_fn=None) -> int:
    """``export_fn``: the GGUF exporter for --adapter (default engine.export.export_gguf)."""
    cfg = _config(args)
    if args.action == "status":
        return _status(args, cfg, job)
    return _create(args, cfg, job, export_fn)


def _status(args, cfg: OllamaConfig, job) -> int:
    with OllamaClient(cfg.host, allow_remote=cfg.allow_remote, timeout=cfg.timeout) as client:
        st = client.status(job.cancel)
    job.report(Finished(job=JOB, result=st))
    if st.reachable:
        text = (f"Ollama {st.version} at {st.host}: {len(st.models)} model(s)\n" +
                "".join(f"  {m}\n" for m in st.models)).rstrip()
    else:
        text = f"Ollama is not reachable at {st.host}: {st.error}\n  hint: {st.hint}"
    _print(args, text, st.to_dict())
    return 0 if st.reachable else 1


def _create(args, cfg: OllamaConfig, job, export_fn=None) -> int:
    if bool(cfg.gguf) == bool(cfg.adapter):
        raise TailorError("give exactly one of --gguf FILE or --adapter NAME")
    if not cfg.name:
        raise TailorError("--name is required: the model name in Ollama, e.g. my-model")
    parse_model_name(cfg.name)  # refuse a bad name before any work
    if cfg.adapter_only and not cfg.adapter:
        raise TailorError("--adapter-only goes with --adapter NAME")
    if cfg.adapter_only and not cfg.base:
        raise TailorError("--adapter-only needs --base MODEL: the base model's name in Ollama",
                          hint="e.g. --base qwen2.5:0.5b-instruct (see `tailor ollama status`)")
    settings = ModelSettings(system=cfg.system, temperature=cfg.temperature, num_ctx=cfg.num_ctx)
    job.report(Started(job=JOB, config={k: v for k, v in vars(cfg).items()}))

    client = None
    if not cfg.offline:
        client = OllamaClient(cfg.host, allow_remote=cfg.allow_remote, timeout=cfg.timeout)
        status = client.status(job.cancel)
        if not status.reachable:
            job.report(Log(job=JOB, level="warning",
                           message=f"{status.error}; writing a Modelfile folder instead"))
            client.close()
            client = None
    try:
        gguf, adapter_gguf, fallback = _source(cfg, job, export_fn)
        folder = None
        if cfg.modelfile_dir or client is None:
            # Written first: if Ollama then fails, the folder is there to import by hand.
            out = (Path(cfg.modelfile_dir).expanduser() if cfg.modelfile_dir
                   else _default_folder(cfg.name))
            folder = write_folder(out, cfg.name, gguf=gguf, adapter_gguf=adapter_gguf,
                                  base=cfg.base, settings=settings, fallback_model_dir=fallback,
                                  replace=cfg.replace, report=job.report,
                                  quant=cfg.quant if cfg.gguf and client is None else None)
            job.report(Log(job=JOB, message=f"wrote {folder.modelfile_dir}"))
        if client is None:
            result = folder
            text = (f"Wrote {result.modelfile_dir} (GGUF, Modelfile, README.txt).\n"
                    f"To import it into Ollama, run:\n  {result.command}")
        else:
            span = (0.6, 1.0) if cfg.adapter else (0.0, 1.0)
            if adapter_gguf is not None:
                result = send_adapter(client, adapter_gguf, cfg.name, cfg.base, settings=settings,
                                      replace=cfg.replace, fallback_model_dir=fallback,
                                      report=job.report, cancel=job.cancel, progress_range=span)
            else:
                result = send_gguf(client, gguf, cfg.name, settings=settings,
                                   quant=cfg.quant if not cfg.adapter else None,
                                   replace=cfg.replace, fallback_model_dir=fallback,
                                   report=job.report, cancel=job.cancel, progress_range=span)
            text = f"Created {result.model} in Ollama. Try it:\n  {result.command} \"Hello!\""
            if folder is not None:
                result.modelfile_dir = folder.modelfile_dir
                text += f"\nModelfile folder (also for LM Studio and llama.cpp): {folder.modelfile_dir}"
    finally:
        if client is not None:
            client.close()
    for note in result.notes:
        job.report(Log(job=JOB, level="info", message=note))
    job.report(Finished(job=JOB, result=result))
    _print(args, text, result.to_dict())
    return 0


def _default_folder(name: str) -> Path:
    safe = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-")
    return paths.exports_dir() / "ollama" / safe


def _source(cfg: OllamaConfig, job, export_fn=None):
    """(gguf, adapter_gguf, fallback tokenizer folder) for the request; exports when needed."""
    if cfg.gguf:
        gguf = Path(cfg.gguf).expanduser()
        if not gguf.is_file():
            raise TailorError(f"{gguf} does not exist or is not a file",
                              hint="give the path of a .gguf file (tailor export writes one)")
        return gguf, None, None
    from ..library import get_adapter

    info = get_adapter(cfg.adapter)
    fallback = info.base_model or None
    if cfg.adapter_only:
        arch = (info.manifest.get("base_model") or {}).get("architecture") or ""
        if arch:
            check_adapter_architecture(gguf_architecture(arch) or arch)
    if export_fn is None:
        try:
            export_fn = load_export_gguf()
        except ImportError as e:
            raise TailorError("the GGUF export (engine.export.export_gguf) is not available in "
                              f"this build: {e}", hint="export with `tailor export` and use "
                                                       "--gguf") from e
    quant = cfg.quant or ("f16" if cfg.adapter_only else "q8_0")
    suffix = "lora" if cfg.adapter_only else quant.lower()
    out = _fresh(paths.exports_dir() / cfg.adapter / f"{cfg.adapter}-{suffix}.gguf")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the export fills the first 60 % of this job's bar
    result = export_fn(info, out, quant, adapter_only=cfg.adapter_only, verify=True,
                       job=job.nested(0.0, 0.6))
    verification = getattr(result, "verification", None) or {}
    if verification and not verification.get("passed", False):
        failed = [c.get("name") for c in verification.get("checks", [])
                  if c.get("passed") is False]
        raise TailorError(f"the exported GGUF {result.path} failed verification ({failed}); it "
                          "was not sent to Ollama", hint="see the .gguf.json record beside it")
    path = Path(result.path)
    job.report(Log(job=JOB, message=f"exported {path}"))
    return (None, path, fallback) if cfg.adapter_only else (path, None, fallback)


def load_export_gguf():
    """engine.export.export_gguf (the package re-export, else its module)."""
    try:
        from ..export import export_gguf
    except ImportError:
        from ..export.gguf_export import export_gguf
    return export_gguf


def _fresh(path: Path) -> Path:
    """``path``, or ``name-2.gguf``, ``-3``... so an earlier export is never overwritten."""
    if not path.exists():
        return path
    i = 2
    while (p := path.with_name(f"{path.stem}-{i}{path.suffix}")).exists():
        i += 1
    return p
