"""`tailor merge NAME1 NAME2 [...] --method M --weights W1,W2 --name NEW [--fuse OUT]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..configs import add_dataclass_args
from .config import MergeConfig


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("adapters", nargs="+", metavar="ADAPTER",
                   help="two or more adapters in the library, all of one base model")
    p.add_argument("--name", default="", help="the new adapter's name in the library (must "
                                              "not exist; with --fuse, recorded only)")
    p.add_argument("--fuse", default=None, metavar="OUT",
                   help="write a fused model folder OUT (must not exist) instead of a library "
                        "adapter; ties and dare are then exact (no SVD)")
    p.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help=MergeConfig.__dataclass_fields__["weights"].metadata["help"])
    add_dataclass_args(p, MergeConfig, skip={"weights"})


def run(args: argparse.Namespace, job) -> int:
    from ..configs import overrides_from_args
    from ..events import Finished, TailorError
    from .config import parse_weights
    from .run import merge_adapters

    cfg = MergeConfig(**overrides_from_args(MergeConfig, args))
    cfg.weights = parse_weights(args.weights)
    if not args.name and not args.fuse:
        raise TailorError("the merged adapter needs a name (--name NEW), or give --fuse OUT "
                          "for a fused model folder")
    result = merge_adapters(args.adapters, cfg, args.name, args.fuse, job=job)
    job.report(Finished(job=job.name, result=result))
    out = sys.stderr if args.events == "-" else sys.stdout
    where = result.fused_path or f"{result.adapter!r} ({result.path})"
    kept = "" if result.exact or result.min_energy_kept is None else (
        f"; rank {result.rank} keeps {100 * result.min_energy_kept:.2f}% of the change's "
        "energy in the worst layer (per layer in the record)")
    print(f"merged {', '.join(result.parents)} by {result.method} into {where} in "
          f"{result.seconds:.1f} s ({result.layers} layers{kept})", file=out)
    return 0
