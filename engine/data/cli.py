"""`tailor data check FILE --model MODEL`: validate a dataset and print its report.

Exit status 1 when ``--strict`` and the report has errors (the full report is printed first),
or when the dataset cannot be used at all.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..configs import add_dataclass_args, overrides_from_args
from ..events import Finished, Started, TailorError
from .config import DataConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="check: validate and report")
    parser.add_argument("file", help="dataset file (.jsonl .json .csv .tsv .txt) or a folder "
                                     "with train/valid/test files")
    parser.add_argument("--model", required=True,
                        help="base model folder or Hugging Face id: its tokenizer and chat "
                             "template are used")
    parser.add_argument("--preview", type=int, default=None, metavar="N",
                        help="show the first N rendered examples with trained text marked")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_dataclass_args(parser, DataConfig, skip={"preview_count"})


def load_tokenizer(model: str, report=None, cancel=None, job: str = "data",
                   notes: list[str] | None = None):
    """mlx-lm's tokenizer wrapper for a model folder (or a resolvable Hugging Face id), as every
    command loads it (engine/models/tokenizer.py: no custom code, faithful to the folder's
    files); lines the user should read about the model (custom code asked for, files not read,
    which tokenizer is used and why) are appended to ``notes``."""
    from ..models.folder_files import model_files
    from ..models.tokenizer import choice_of, load_tokenizer as load_model_tokenizer

    folder = Path(model).expanduser()
    if not folder.is_dir():
        try:
            from ..models import resolve_model  # the models area resolves and downloads ids
        except ImportError:
            raise TailorError(f"{model}: no such model folder") from None
        kwargs = {k: v for k, v in (("report", report), ("cancel", cancel)) if v is not None}
        folder = Path(resolve_model(model, **kwargs))
    files = model_files(folder)  # a chat template or tokenizer file linked outside: not read
    if report is not None:
        files.report_skipped(report, job)
    if notes is not None:
        notes += [n for n in (_custom_code_note(folder), files.note()) if n]
    tokenizer = load_model_tokenizer(folder)
    choice = choice_of(tokenizer)
    if notes is not None and choice is not None and choice.note():
        notes.append(choice.note())
    return tokenizer


def _custom_code_note(folder: Path) -> str:
    from ..models.load import custom_code_note, read_config

    try:
        return custom_code_note(read_config(folder))
    except TailorError:  # no readable config.json: a tokenizer-only folder
        return ""


def run(args: argparse.Namespace, job) -> int:
    from .prepare import prepare_dataset

    config = DataConfig(**overrides_from_args(DataConfig, args))
    strict = config.strict
    config.strict = False  # collect every problem, then decide the exit status
    if args.preview is not None:
        config.preview_count = max(0, args.preview)
    job.report(Started(job=job.name, config={"file": args.file, "model": args.model,
                                             **vars(config)}))
    model_notes: list[str] = []
    tokenizer = load_tokenizer(args.model, job.report, job.cancel, notes=model_notes)
    prepared = prepare_dataset(args.file, tokenizer, config, report=job.report,
                               cancel=job.cancel, job=job.name)
    rep = prepared.report
    rep.notes += model_notes
    rep.strict = strict
    result = rep.to_dict()
    job.report(Finished(job=job.name, result=rep))  # typed: the app reads a DataReport
    if args.events != "-":  # stdout carries the event stream otherwise
        if args.json:
            sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
        else:
            sys.stdout.write(rep.format_text() + "\n")
        sys.stdout.flush()
    return 1 if strict and rep.errors else 0
