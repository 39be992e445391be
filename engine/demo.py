"""`tailor demo`: the whole product end to end, headless, in about a minute on a laptop CPU.

A tiny model is built on the spot (real tokenizer and chat template), the demo's sample dataset
from ``resources/`` is checked, an adapter is trained into the library, the base model and the
adapter answer a few try-it prompts (compared with the dataset's answers), the adapter is exported
to GGUF and verified (in llama.cpp where it is installed), and the Ollama Modelfile folder is
written. Every step is a
real engine call: the same code the app and the other commands run. Nothing is overwritten: each
demo run gets its own adapter name and output folder.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .sizes import format_bytes
from . import paths
from .events import (CancelToken, Finished, Job, Progress, Reporter, TailorError, as_job,
                     null_reporter)
from .results import DemoResult

# Six facts, each asked four ways (resources/samples/make_samples.py): a random two-layer model
# memorises them through a LoRA adapter in 200 steps. On the app's 240-fact chat_sample.jsonl it
# learns the answers' shape but not which fact goes with which prompt (0 of 12 exact, measured).
DEMO_DATASET = paths.RESOURCES / "samples" / "demo_sample.jsonl"
STAGES = ["model", "data", "train", "try", "export", "modelfile"]
DEMO_MODEL_SIZE = {"hidden_size": 128, "intermediate_size": 256, "embed_std": 0.1}
TRY_PROMPTS = ["What is the opposite of hot?", "What does a cow say?", "What colour is the sky?"]
TRY_MAX_TOKENS = 40  # the longest reference is 24 tokens: an exact answer is never cut short


@dataclass
class DemoConfig:
    kind: str = "qwen2"
    iters: int = 200
    quant: str = "q8_0"
    dataset: Path = DEMO_DATASET
    out: Path | None = None  # default: <TAILOR_HOME>/demo/<stamp>
    verify: bool = True


def _unique_stamp(root: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name, n = stamp, 1
    while (root / name).exists() or (paths.adapters_dir() / f"demo-{name}").exists():
        n += 1
        name = f"{stamp}-{n}"
    return name


def _references(dataset: Path) -> dict[int, tuple[str, str]]:
    """{line number: (first user message, the assistant's answer to it)} of a chat .jsonl file;
    {} for other files (the try-it answers are then shown without a reference)."""
    refs: dict[int, tuple[str, str]] = {}
    if dataset.suffix.lower() != ".jsonl":
        return refs
    with open(dataset, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                messages = json.loads(line).get("messages") or []
            except (ValueError, AttributeError):
                continue  # the data check has reported it
            turns = [m for m in messages if isinstance(m, dict)]
            for first, second in zip(turns, turns[1:]):
                if first.get("role") == "user" and second.get("role") == "assistant":
                    refs[n] = (str(first.get("content")), str(second.get("content")))
                    break
    return refs


def _line_of(source: str) -> int | None:
    tail = source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _try_prompts(dataset: Path, prepared) -> list[dict]:
    """The try-it prompts with their reference answers and the split each one was in."""
    refs = _references(dataset)
    split_of = {_line_of(e.source): part_name for part_name, part in
                (("train", prepared.train), ("valid", prepared.valid)) for e in part}
    tries = []
    for prompt in TRY_PROMPTS:
        line = next((n for n, (q, _) in refs.items() if q.strip() == prompt), None)
        tries.append({"prompt": prompt, "reference": refs[line][1] if line else None,
                      "where": split_of.get(line) if line else None})
    return tries


def run_demo(config: DemoConfig | None = None, *, report: Reporter = null_reporter,
             cancel: CancelToken | None = None, job: Job | str = "demo") -> DemoResult:
    """Build, check, train, try, export, verify and write the Modelfile folder; return what
    it made (the command reports it). ``job``: a Job, or a name with ``report``/``cancel``."""
    from .export.gguf_export import export_gguf
    from .ollama.handoff import write_folder
    from .tiny_models import cached_tiny_model

    job = as_job(job, report, cancel)
    config = config or DemoConfig()
    t0 = time.time()
    demo_root = paths.tailor_home() / "demo"
    stamp = _unique_stamp(Path(config.out) if config.out else demo_root)
    out = Path(config.out).expanduser() / stamp if config.out else demo_root / stamp
    name = f"demo-{stamp}"
    result = DemoResult(dataset=str(config.dataset), adapter=name)
    job.started({"kind": config.kind, "iters": config.iters, "quant": config.quant,
                 "dataset": str(config.dataset), "out": str(out), "adapter": name})

    def stage(i: int, message: str) -> None:
        job.cancel.raise_if_cancelled()
        job.report(Progress(job=job.name, stage=STAGES[i], done=i, total=len(STAGES),
                            message=message))

    stage(0, f"building a tiny {config.kind} model (cached after the first run)")
    # Wider than the test fixtures and with a small embedding scale, so that a LoRA adapter
    # visibly learns the sample's style in about a minute on a CPU.
    model = cached_tiny_model(config.kind, paths.models_dir() / "tiny", **DEMO_MODEL_SIZE)
    result.model = str(model)
    stage(1, f"checking {config.dataset.name}")
    prepared = _check_dataset(config, model, job)
    stage(2, f"training adapter {name!r} for {config.iters} steps")
    _train(result, config, model, name, job)
    stage(3, f"asking the base model and the adapter {len(TRY_PROMPTS)} try-it questions")
    _try_it(result, config, model, name, prepared, job)

    stage(4, f"exporting {config.quant} GGUF and verifying it")
    out.mkdir(parents=True, exist_ok=True)
    exported = export_gguf(name, out / f"{name}.{config.quant}.gguf", config.quant,
                           verify=config.verify, report=job.report, cancel=job.cancel,
                           job=f"{job.name}:export")
    result.gguf, result.gguf_bytes = str(exported.path), exported.size_bytes
    result.verification = exported.verification
    if config.verify and not exported.verification.get("passed"):
        from .export.verify import format_verification

        raise TailorError(f"the exported file {exported.path} failed verification",
                          hint=format_verification(exported.verification))

    stage(5, "writing the Ollama Modelfile folder")
    handoff = write_folder(out / "ollama", name, gguf=exported.path, fallback_model_dir=model,
                           report=job.report)
    result.modelfile_dir, result.command = handoff.modelfile_dir, handoff.command
    result.seconds = round(time.time() - t0, 1)
    return result


def _check_dataset(config: DemoConfig, model: Path, job: Job):
    """The sample checked with the tiny model's tokenizer -> the prepared dataset."""
    from .data import DataConfig, prepare_dataset
    from .models.tokenizer import load_tokenizer  # (a tiny local folder: no notes)

    if not Path(config.dataset).is_file():
        raise TailorError(f"the sample dataset is missing: {config.dataset}",
                          hint="reinstall Tailor, or pass --dataset FILE")
    tokenizer = load_tokenizer(str(model))
    prepared = prepare_dataset(config.dataset, tokenizer, DataConfig(max_seq_length=256),
                               report=job.report, cancel=job.cancel, job=f"{job.name}:data")
    if prepared.report.good == 0:
        raise TailorError(f"{config.dataset}: no usable examples",
                          hint=prepared.report.format_text())
    return prepared


def _train(result: DemoResult, config: DemoConfig, model: Path, name: str, job: Job) -> None:
    """Train the demo adapter into the library; its losses go into ``result``."""
    from .train.config import make_config
    from .train.run import train_adapter

    cfg = make_config("balanced", iters=config.iters, batch_size=8, max_seq_length=256,
                      learning_rate=3e-3, eval_every=max(1, config.iters // 4),
                      save_every=max(1, config.iters // 2), val_batches=4)
    info = train_adapter(model, config.dataset, name, cfg, report=job.report,
                         cancel=job.cancel, job=f"{job.name}:train")
    result.adapter_path = str(info.path)
    vals = [loss for _, loss in (info.manifest.get("loss_history") or {}).get("valid", [])]
    result.first_val_loss = vals[0] if vals else None
    result.best_val_loss = info.manifest.get("best_val_loss")


def _try_it(result: DemoResult, config: DemoConfig, model: Path, name: str, prepared,
            job: Job) -> None:
    """The base model and the adapter answer each try-it prompt; ``result.tries`` says which
    answers equal the dataset's."""
    from .generate import generate_text

    for t in _try_prompts(Path(config.dataset), prepared):
        for who, model_arg, adapter_arg in (("base", str(model), None), ("adapter", None, name)):
            reply = generate_text(model_arg, adapter_arg, t["prompt"], max_tokens=TRY_MAX_TOKENS,
                                  cancel=job.cancel, job=f"{job.name}:try")
            t[who] = reply.strip()
            t[f"{who}_matches"] = t["reference"] is not None and \
                t[who] == t["reference"].strip()
        result.tries.append(t)
    result.base_matches = sum(t["base_matches"] for t in result.tries)
    result.adapter_matches = sum(t["adapter_matches"] for t in result.tries)


def format_summary(r: DemoResult) -> str:
    from .export.verify import format_verification

    loss = ""
    if r.first_val_loss is not None and r.best_val_loss is not None:
        loss = f" (validation loss {r.first_val_loss:.3f} -> {r.best_val_loss:.3f})"
    return "\n".join([
        f"Tailor demo finished in {r.seconds:.0f} s. Everything it wrote:",
        f"  base model      {r.model}",
        f"  dataset         {r.dataset} (read only, unchanged)",
        f"  adapter         {r.adapter_path}{loss}",
        *format_tries(r),
        f"  GGUF            {r.gguf} ({format_bytes(r.gguf_bytes)})",
        f"  Modelfile       {r.modelfile_dir}",
        format_verification(r.verification),
        "With Ollama installed, load it with:",
        f"  {r.command}",
        f"  ollama run {r.adapter}",
    ])


_WHERE = {"train": "in the training data", "valid": "held out for validation: never trained on",
          None: "not in the dataset"}


def format_tries(r: DemoResult) -> list[str]:
    """The try-it block: each prompt, where it came from, the reference, both answers."""
    lines = ["  try it          greedy answers of the untrained base model, then with the adapter"]
    for t in r.tries:
        lines.append(f"    {t['prompt']!r} ({_WHERE[t['where']]})")
        if t["reference"] is not None:
            lines.append(f"      reference   {t['reference']!r}")
        for who, label in (("base", "base model"), ("adapter", "+ adapter ")):
            mark = ""
            if t["reference"] is not None:
                mark = "  matches" if t[f"{who}_matches"] else "  differs"
            lines.append(f"      {label}  {t[who]!r}{mark}")
    compared = sum(t["reference"] is not None for t in r.tries)
    if compared:
        lines.append(f"    exact answers: base model {r.base_matches} of {compared}, "
                     f"with the adapter {r.adapter_matches} of {compared}")
    return lines


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
    result = run_demo(config, job=job)
    job.report(Finished(job=job.name, result=result))
    out = sys.stderr if args.events == "-" else sys.stdout
    if args.json:
        print(json.dumps(result.to_dict(), indent=2), file=out)
    else:
        print(format_summary(result), file=out)
    return 0
