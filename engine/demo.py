"""`tailor demo`: the whole product end to end, headless, in about a minute on a laptop CPU.

A tiny model is built on the spot (real tokenizer and chat template), the sample dataset from
``resources/`` is checked, an adapter is trained into the library, exported to GGUF and verified
(in llama.cpp where it is installed), and the Ollama Modelfile folder is written. Every step is a
real engine call: the same code the app and the other commands run. Nothing is overwritten: each
demo run gets its own adapter name and output folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .sizes import format_bytes
from . import paths
from .events import CancelToken, Finished, Progress, Reporter, Started, TailorError, null_reporter

SAMPLE_DATASET = paths.RESOURCES / "samples" / "chat_sample.jsonl"
STAGES = ["model", "data", "train", "try", "export", "modelfile"]
DEMO_MODEL_SIZE = {"hidden_size": 128, "intermediate_size": 256, "embed_std": 0.1}
TRY_PROMPT = "What is the opposite of hot?"


@dataclass
class DemoConfig:
    kind: str = "qwen2"
    iters: int = 200
    quant: str = "q8_0"
    dataset: Path = SAMPLE_DATASET
    out: Path | None = None  # default: <TAILOR_HOME>/demo/<stamp>
    verify: bool = True


@dataclass
class DemoResult:
    model: str = ""
    dataset: str = ""
    adapter: str = ""
    adapter_path: str = ""
    first_val_loss: float | None = None
    best_val_loss: float | None = None
    prompt: str = TRY_PROMPT
    base_reply: str = ""
    adapter_reply: str = ""
    gguf: str = ""
    gguf_bytes: int = 0
    verification: dict = field(default_factory=dict)
    modelfile_dir: str = ""
    command: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _unique_stamp(root: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, n = stamp, 1
    while (root / name).exists() or (paths.adapters_dir() / f"demo-{name}").exists():
        n += 1
        name = f"{stamp}-{n}"
    return name


def run_demo(config: DemoConfig | None = None, *, report: Reporter = null_reporter,
             cancel: CancelToken | None = None, job: str = "demo") -> DemoResult:
    """Build, check, train, export, verify and write the Modelfile folder; return where."""
    from .data import DataConfig, prepare_dataset
    from .data.cli import load_tokenizer
    from .export.gguf_export import export_gguf
    from .ollama.handoff import write_folder
    from .generate import generate_text
    from .tiny_models import cached_tiny_model
    from .train.config import make_config
    from .train.run import train_adapter

    config = config or DemoConfig()
    cancel = cancel or CancelToken()
    t0 = time.time()
    demo_root = paths.tailor_home() / "demo"
    stamp = _unique_stamp(Path(config.out) if config.out else demo_root)
    out = Path(config.out).expanduser() / stamp if config.out else demo_root / stamp
    name = f"demo-{stamp}"
    result = DemoResult(dataset=str(config.dataset), adapter=name)
    report(Started(job=job, config={"kind": config.kind, "iters": config.iters,
                                    "quant": config.quant, "dataset": str(config.dataset),
                                    "out": str(out), "adapter": name}))

    def stage(i: int, message: str) -> None:
        cancel.raise_if_cancelled()
        report(Progress(job=job, stage=STAGES[i], done=i, total=len(STAGES), message=message))

    stage(0, f"building a tiny {config.kind} model (cached after the first run)")
    # Wider than the test fixtures and with a small embedding scale, so that a LoRA adapter
    # visibly learns the sample's style in about a minute on a CPU.
    model = cached_tiny_model(config.kind, paths.models_dir() / "tiny", **DEMO_MODEL_SIZE)
    result.model = str(model)

    stage(1, f"checking {config.dataset.name}")
    if not Path(config.dataset).is_file():
        raise TailorError(f"the sample dataset is missing: {config.dataset}",
                          hint="reinstall Tailor, or pass --dataset FILE")
    tokenizer = load_tokenizer(str(model))
    prepared = prepare_dataset(config.dataset, tokenizer, DataConfig(max_seq_length=256),
                               report=report, cancel=cancel, job=f"{job}:data")
    if prepared.report.good == 0:
        raise TailorError(f"{config.dataset}: no usable examples",
                          hint=prepared.report.format_text())

    stage(2, f"training adapter {name!r} for {config.iters} steps")
    cfg = make_config("balanced", iters=config.iters, batch_size=8, max_seq_length=256,
                      learning_rate=3e-3, eval_every=max(1, config.iters // 4),
                      save_every=max(1, config.iters // 2), val_batches=4)
    info = train_adapter(model, config.dataset, name, cfg, report=report, cancel=cancel,
                         job=f"{job}:train")
    result.adapter_path = str(info.path)
    vals = [loss for _, loss in (info.manifest.get("loss_history") or {}).get("valid", [])]
    result.first_val_loss = vals[0] if vals else None
    result.best_val_loss = info.manifest.get("best_val_loss")

    stage(3, "trying the base model and the adapter on one prompt")
    result.base_reply = generate_text(str(model), None, TRY_PROMPT, max_tokens=24,
                                      cancel=cancel, job=f"{job}:try")
    result.adapter_reply = generate_text(None, name, TRY_PROMPT, max_tokens=24,
                                         cancel=cancel, job=f"{job}:try")

    stage(4, f"exporting {config.quant} GGUF and verifying it")
    out.mkdir(parents=True, exist_ok=True)
    exported = export_gguf(name, out / f"{name}.{config.quant}.gguf", config.quant,
                           verify=config.verify, report=report, cancel=cancel,
                           job=f"{job}:export")
    result.gguf, result.gguf_bytes = str(exported.path), exported.size_bytes
    result.verification = exported.verification
    if config.verify and not exported.verification.get("passed"):
        from .export.cli import format_verification

        raise TailorError(f"the exported file {exported.path} failed verification",
                          hint=format_verification(exported.verification))

    stage(5, "writing the Ollama Modelfile folder")
    handoff = write_folder(out / "ollama", name, gguf=exported.path, fallback_model_dir=model,
                           report=report)
    result.modelfile_dir, result.command = handoff.modelfile_dir, handoff.command
    result.seconds = round(time.time() - t0, 1)
    report(Finished(job=job, result=result.to_dict()))
    return result


def format_summary(r: DemoResult) -> str:
    from .export.cli import format_verification

    loss = ""
    if r.first_val_loss is not None and r.best_val_loss is not None:
        loss = f" (validation loss {r.first_val_loss:.3f} -> {r.best_val_loss:.3f})"
    return "\n".join([
        f"Tailor demo finished in {r.seconds:.0f} s. Everything it wrote:",
        f"  base model      {r.model}",
        f"  dataset         {r.dataset} (read only, unchanged)",
        f"  adapter         {r.adapter_path}{loss}",
        f"  try it          {r.prompt!r}",
        f"    base model    {r.base_reply.strip()!r}",
        f"    + adapter     {r.adapter_reply.strip()!r}",
        f"  GGUF            {r.gguf} ({format_bytes(r.gguf_bytes)})",
        f"  Modelfile       {r.modelfile_dir}",
        format_verification(r.verification),
        "With Ollama installed, load it with:",
        f"  {r.command}",
        f"  ollama run {r.adapter}",
    ])


def configure(p: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    p.add_argument("--kind", default=d.kind, help="tiny model architecture to build "
                   "(llama3, llama2, qwen2, qwen3, gemma, gemma2, gemma3, phi3)")
    p.add_argument("--iters", type=int, default=d.iters, help="training steps")
    p.add_argument("--quant", default=d.quant, help="GGUF type (f16, q8_0, q4_k_m, ...)")
    p.add_argument("--dataset", type=Path, default=d.dataset, help="chat dataset to train on")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the GGUF and Modelfile folder (default: "
                        "<library>/demo/<timestamp>)")
    p.add_argument("--no-verify", action="store_true", help="skip the llama.cpp check")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace, job) -> int:
    if args.iters < 1:
        raise TailorError(f"--iters must be at least 1 (got {args.iters})")
    config = DemoConfig(kind=args.kind, iters=args.iters, quant=args.quant,
                        dataset=args.dataset, out=args.out, verify=not args.no_verify)
    result = run_demo(config, report=job.report, cancel=job.cancel, job=job.name)
    out = sys.stderr if args.events == "-" else sys.stdout
    if args.json:
        print(json.dumps(result.to_dict(), indent=2), file=out)
    else:
        print(format_summary(result), file=out)
    return 0
