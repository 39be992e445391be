"""`tailor export`: write a GGUF file from a library adapter or a model folder, verify it, and
print the verification."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..sizes import format_bytes
from .mixtures import QUANTS
from .quant_types import help_table


def _list_types_action(*required):
    """--list-types: an action that lifts ``required`` (the source group, --out), since
    listing writes nothing; argparse checks requirements after every action has run, so
    the flag may come anywhere on the line."""
    class ListTypes(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            for thing in required:
                thing.required = False
            setattr(namespace, self.dest, True)

    return ListTypes


def configure(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", help="an adapter in the library (fused into its base)")
    src.add_argument("--model", help="a Hugging Face / MLX model folder (e.g. a fused one)")
    p.add_argument("--quant", default="f16", choices=QUANTS, metavar="TYPE",
                   help="the GGUF file type, with llama.cpp's per-tensor mixture for it "
                        "(the list below; default f16)")
    p.epilog = help_table()
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the table's lines
    out = p.add_argument("--out", required=True, help="the .gguf file to write (must not "
                         "exist); with --format peft, the folder (new or empty)")
    p.add_argument("--list-types", nargs=0, default=False, action=_list_types_action(src, out),
                   help="list the file types (bits per weight, typical use) and write "
                        "nothing; with --model or --adapter, also each type's expected size")
    p.add_argument("--format", choices=["gguf", "peft"], default="gguf",
                   help="gguf (default), or peft: the adapter as Hugging Face PEFT's "
                        "adapter_model.safetensors + adapter_config.json (with --adapter)")
    p.add_argument("--adapter-only", action="store_true",
                   help="write the LoRA adapter alone as a GGUF adapter (llama.cpp --lora, "
                        "Ollama ADAPTER)")
    p.add_argument("--lmstudio", action="store_true",
                   help="then put the verified GGUF in LM Studio's models folder (a hard link, "
                        "else a copy; `lms import` when it is on PATH)")
    p.add_argument("--no-verify", action="store_true",
                   help="skip loading the file in llama.cpp (the structure is still checked)")
    p.add_argument("--threads", type=int, default=None,
                   help="encoders side by side (default: every core; a large model encodes "
                        "in that many worker processes, 1 keeps all in this process)")
    p.add_argument("--allow-tokenizer-mismatch", action="store_true",
                   help="write the GGUF even when llama.cpp has no pre-tokenizer that "
                        "reproduces the model's: the closest type is used and the measured "
                        "mismatch rate recorded (the model will see text split differently "
                        "from training)")
    from ..configs import add_dataclass_args
    from .imatrix_config import ImatrixConfig

    add_dataclass_args(p, ImatrixConfig)  # --imatrix FILE|auto and its collection settings


def run(args: argparse.Namespace, job) -> int:
    import dataclasses

    from ..events import Finished
    from .gguf_export import export_gguf, record_path
    from .verify import format_verification

    if args.lmstudio and (args.format == "peft" or args.adapter_only):
        from ..events import TailorError

        raise TailorError("--lmstudio places a whole-model GGUF; LM Studio does not load "
                          "LoRA adapter files on their own",
                          hint="leave out --adapter-only / --format peft")
    if args.list_types:
        return _run_list_types(args, job)
    if args.format == "peft":
        return _run_peft(args, job)
    source = Path(args.model) if args.model else args.adapter
    from .imatrix_source import imatrix_from_args

    imatrix = imatrix_from_args(args, source, job)  # None without --imatrix
    result = export_gguf(source, Path(args.out), args.quant, adapter_only=args.adapter_only,
                         verify=not args.no_verify, job=job, threads=args.threads,
                         allow_tokenizer_mismatch=args.allow_tokenizer_mismatch,
                         imatrix=imatrix)
    placed = _to_lmstudio(args, result, job) if args.lmstudio else None
    # the per-tensor list stays in the record file; the event says how many
    job.report(Finished(job=job.name, result=dataclasses.replace(result, tensors=[])))
    out = sys.stderr if args.events == "-" else sys.stdout
    print(f"wrote {result.path} ({format_bytes(result.size_bytes)}, {result.quant}) in "
          f"{result.seconds:.1f} s; record: {record_path(result.path)}", file=out)
    print(format_verification(result.verification), file=out)
    if placed:
        from ..lmstudio import describe

        print(describe(placed), file=out)
    return 0 if result.verification.get("passed") else 1


def _to_lmstudio(args: argparse.Namespace, result, job):
    """The verified GGUF into LM Studio's models folder (an unverified one stays out)."""
    from ..lmstudio import describe, place_in_lmstudio

    if not result.verification.get("passed") and not args.no_verify:
        job.log("the GGUF failed verification; it was not put in LM Studio", level="warning")
        return None
    placed = place_in_lmstudio(result.path, model=args.adapter or None, job=job.nested(1, 1))
    job.log(describe(placed))
    return placed


def _run_peft(args: argparse.Namespace, job) -> int:
    from ..events import Finished, TailorError
    from .peft import export_peft

    if not args.adapter:
        raise TailorError("--format peft writes a library adapter; --model names a whole model",
                          hint="use --adapter NAME (tailor library list)")
    result = export_peft(args.adapter, Path(args.out), job=job)
    job.report(Finished(job=job.name, result=result))
    out = sys.stderr if args.events == "-" else sys.stdout
    print(f"wrote {result.path} (PEFT LoRA{', DoRA' if result.use_dora else ''}, r "
          f"{result.rank}, alpha {result.alpha:g}{', rsLoRA' if result.use_rslora else ''}; "
          f"{format_bytes(result.size_bytes)})", file=out)
    for note in result.notes:
        print(f"note: {note}", file=out)
    return 0


def list_types(model_dir: Path | None = None) -> "QuantTypeList":
    """Every type of quant_types.QUANT_TYPES, in order; with ``model_dir``, each with the
    expected size of its GGUF of that model (plan.expected_sizes)."""
    from ..results import QuantTypeInfo, QuantTypeList
    from .plan import expected_sizes
    from .quant_types import QUANT_TYPES

    sizes = expected_sizes(model_dir, [q.name for q in QUANT_TYPES]) if model_dir else {}
    return QuantTypeList(model=str(model_dir or ""), types=[
        QuantTypeInfo(q.name, q.bits_per_weight, q.use, q.wants_imatrix, sizes.get(q.name))
        for q in QUANT_TYPES])


def _run_list_types(args: argparse.Namespace, job) -> int:
    from ..events import Finished

    model_dir = Path(args.model).expanduser() if args.model else None
    if args.adapter:
        from ..fuse import resolve_adapter

        model_dir = resolve_adapter(args.adapter)[2]
    result = list_types(model_dir)
    out = sys.stderr if args.events == "-" else sys.stdout
    sizes = {t.name: format_bytes(t.expected_bytes) for t in result.types
             if t.expected_bytes is not None}
    print(help_table(sizes, str(model_dir or "")), file=out)
    job.report(Finished(job=job.name, result=result))
    return 0
