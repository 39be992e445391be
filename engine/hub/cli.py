"""`tailor push --adapter NAME --repo OWNER/NAME [--private] [--gguf TYPE ...] [--peft]`:
publish a library adapter (and its GGUFs, PEFT form, loss curve and model card) to the
Hugging Face Hub. The exact file list is shown first; nothing is uploaded until it is confirmed
(`--yes`, or answering the question in a terminal)."""
from __future__ import annotations

import argparse
import sys

from ..events import Finished, Job, TailorError
from ..results import PushPlan


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--adapter", required=True, help="the library adapter to publish")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME",
                   help="the Hub model repository (created when it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--gguf", nargs="+", action="extend", default=[], metavar="TYPE",
                   help="also write, verify and upload the fused model as GGUF of these types "
                        "(e.g. q4_k_m q8_0)")
    p.add_argument("--peft", action="store_true",
                   help="also upload the adapter in Hugging Face PEFT's format (at the repo's "
                        "root; mlx-lm's files then go in mlx/)")
    p.add_argument("--yes", action="store_true",
                   help="upload without asking (the file list is still printed first)")
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be uploaded and stop (nothing is written or sent)")


def format_plan(plan: PushPlan) -> str:
    from ..sizes import format_bytes

    lines = [f"{'private' if plan.private else 'public'} repository {plan.repo}, "
             f"{len(plan.files)} files" + (f", {format_bytes(plan.total_bytes)}"
                                           if plan.staged else "") + ":"]
    for f in plan.files:
        size = format_bytes(f.size) if f.size is not None else "written before upload"
        lines.append(f"  {f.path:<40} {size:>12}  {f.what}")
    return "\n".join(lines)


def confirmed(plan: PushPlan, args: argparse.Namespace, out) -> bool:
    """--yes, or a yes typed in a terminal; with events on stdout (the app) only --yes."""
    if args.yes:
        return True
    if args.events == "-" or not sys.stdin.isatty():
        return False
    print(f"Upload these files to {plan.repo}? [y/N] ", end="", file=out, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, job: Job) -> int:
    from .push import plan_push, stage, staging_folder, upload

    out = sys.stderr if args.events == "-" else sys.stdout
    plan = plan_push(args.adapter, args.repo, ggufs=args.gguf, peft=args.peft,
                     private=args.private)
    if args.dry_run:
        job.report(Finished(job=job.name, result=plan))
        print(format_plan(plan), file=out)
        return 0
    job.started({"adapter": args.adapter, "repo": args.repo, "private": args.private,
                 "gguf": args.gguf, "peft": args.peft}, {})
    with staging_folder() as folder:
        staged = stage(plan, folder, job)
        print(format_plan(staged), file=out)
        if not confirmed(staged, args, out):
            raise TailorError(f"nothing was uploaded to {args.repo}: the file list was not "
                              "confirmed", hint="run it again with --yes to upload these files")
        result = upload(staged, folder, job)
    job.report(Finished(job=job.name, result=result))
    print(f"pushed {len(result.files)} files to {result.url} ({result.commit_url})", file=out)
    return 0
