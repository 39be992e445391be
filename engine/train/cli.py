"""`tailor train`: train an adapter into the library, or resume one.

    tailor train --model PATH_OR_ID --data FILE --name NAME [--iters N | --epochs E]
                 [--preset quick-style|balanced|thorough] [--resume NAME] [--events -] ...
"""
from __future__ import annotations

import argparse

from ..configs import add_dataclass_args, overrides_from_args
from ..events import Finished, TailorError
from .config import PRESET_HELP, PRESETS, TrainConfig, make_config, merge_resume_config


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="base model: a local folder or a Hugging Face repo id")
    p.add_argument("--data", help="dataset file (JSONL, JSON, CSV, TSV, text) or folder")
    p.add_argument("--name", help="name of the new adapter in the library")
    p.add_argument("--resume", metavar="NAME",
                   help="continue the adapter NAME from its latest checkpoint")
    p.add_argument("--preset", choices=list(PRESETS),
                   help="; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()))
    add_dataclass_args(p, TrainConfig)
    g = p.add_argument_group("several machines (data-parallel, MLX's mlx.launch)")
    g.add_argument("--ranks", type=int, default=0, metavar="N",
                   help="train with N processes on this machine (data-parallel; the global "
                        "batch is split across them)")
    g.add_argument("--hosts", metavar="FILE|H1,H2",
                   help="train on several machines: an MLX host file (JSON) or host names "
                        "separated by commas; each is checked over ssh first")
    g.add_argument("--no-copy-data", action="store_true",
                   help="refuse a host without the dataset at the same path, instead of "
                        "copying it (verified by sha256) into Tailor's folder on that host")
    from ..data import DataConfig

    g = p.add_argument_group("data")
    add_dataclass_args(g, DataConfig, skip={"max_seq_length", "min_examples", "preview_count"})


def run(args: argparse.Namespace, job) -> int:
    from .launch import dispatch
    from .run import train_adapter, train_result

    ended = dispatch(args, job)  # --ranks/--hosts: the launcher, or a rank other than 0
    if ended is not None:
        return ended
    overrides = overrides_from_args(TrainConfig, args)
    from ..data import DataConfig

    data_over = overrides_from_args(DataConfig, args)
    data_over.pop("max_seq_length", None)
    data_config = DataConfig(**data_over)
    if args.resume and data_over:
        # only the data flags given now are checked against the run's own settings
        from .. import library

        saved = library.get_adapter(args.resume).manifest.get("data_settings") or {}
        data_config = DataConfig(**{**saved, **data_over})
    elif args.resume:
        data_config = None
    if args.resume:
        if args.name and args.name != args.resume:
            raise TailorError("--name and --resume name different adapters",
                              hint="to continue a run, give only --resume NAME")
        cfg = None
        if overrides or args.preset:
            from .run import _saved_config

            # a preset's values, then the flags; refused here, before any loading, when resume
            # cannot take them (each setting named with why)
            given = {**(PRESETS.get(args.preset, {}) if args.preset else {}), **overrides}
            cfg = merge_resume_config(_saved_config(args.resume), given, args.resume)
        info = train_adapter(args.model, args.data, args.resume, cfg, data_config=data_config,
                             resume=True, job=job)
        job.report(Finished(job=job.name, result=train_result(info)))
        return 0
    missing = [f for f in ("model", "data", "name") if not getattr(args, f)]
    if missing:
        raise TailorError("missing " + ", ".join("--" + m for m in missing),
                          hint="tailor train --model PATH --data FILE --name NAME")
    cfg = make_config(args.preset, **overrides)
    info = train_adapter(args.model, args.data, args.name, cfg, data_config=data_config, job=job)
    job.report(Finished(job=job.name, result=train_result(info)))
    return 0
