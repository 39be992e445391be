"""`tailor eval --adapter NAME [--data FILE] [--limit N] [--seed S] [--markdown FILE]`: did
the fine-tune help on examples it never saw, did it keep the base's general skills, does the
shipped file answer like the trained model. The report is kept in the adapter's record."""
from __future__ import annotations

import argparse
import sys

from ..events import Finished
from .generation import DEFAULT_BATCH_SIZE
from .heldout import DEFAULT_LIMIT


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="an adapter in the library")
    p.add_argument("--data", default=None,
                   help="a file (or train/valid/test folder) of held-out examples in any "
                        "format the importer reads (default: the run's own validation split)")
    p.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help=f"evaluate at most this many examples, drawn with --seed "
                        f"(default {DEFAULT_LIMIT}; 0: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample of examples")
    p.add_argument("--max-tokens", type=int, default=0,
                   help="most tokens per answer (0: the longest reference + 8, 16 to 256)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="prompts answered together in one forward pass")
    p.add_argument("--no-probe", dest="probe", action="store_false",
                   help="skip the forgetting probe (general prompts, base against adapter)")
    p.add_argument("--parity", action="store_true",
                   help="also compare the fused model and every GGUF exported from this "
                        "adapter with MLX + adapter (fuses into a temporary folder)")
    p.add_argument("--fused", default=None, metavar="DIR",
                   help="parity: compare this fused model folder instead of fusing one now "
                        "(implies --parity)")
    p.add_argument("--gguf", action="append", default=None, metavar="FILE",
                   help="parity: compare this GGUF (repeat for several) instead of the ones "
                        "found by their export records (implies --parity)")
    p.add_argument("--markdown", default=None, metavar="FILE",
                   help="also write a Markdown reproducibility report to FILE (a new file)")


def run(args: argparse.Namespace, job) -> int:
    from .parity import check_parity_files
    from .run import evaluate_adapter

    check_parity_files(args.fused, args.gguf)  # a missing file is said before minutes of work
    report = evaluate_adapter(args.adapter, job, data=args.data, limit=args.limit,
                              seed=args.seed, max_tokens=args.max_tokens,
                              batch_size=args.batch_size, probe=args.probe,
                              parity=args.parity or bool(args.fused or args.gguf),
                              fused=args.fused, ggufs=args.gguf, markdown=args.markdown)
    job.report(Finished(job=job.name, result=report))
    out = sys.stderr if args.events == "-" else sys.stdout
    print(report.format_text(), file=out)
    if report.markdown:
        print(f"  Markdown report: {report.markdown}", file=out)
    return 0
