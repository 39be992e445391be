"""`tailor library list|show|rename|delete|duplicate`: the adapters Tailor has trained."""
from __future__ import annotations

import argparse
import json
import sys
import time

from . import library
from .cli_options import add_action
from .events import Finished
from .results import AdapterRecord, LibraryChange, LibraryList


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = add_action(sub, "list", help="list adapters")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show = add_action(sub, "show", help="print an adapter's manifest")
    show.add_argument("name")
    show.add_argument("--json", action="store_true", help="print the manifest as JSON")
    ren = add_action(sub, "rename", help="rename an adapter")
    ren.add_argument("name")
    ren.add_argument("new_name")
    dup = add_action(sub, "duplicate", help="copy an adapter under a new name (no checkpoints)")
    dup.add_argument("name")
    dup.add_argument("new_name")
    rm = add_action(sub, "delete", help="move an adapter and its checkpoints to the Trash")
    rm.add_argument("name")
    rm.add_argument("--permanently", action="store_true",
                    help="delete it for good instead of moving it to the Trash (it cannot be "
                         "restored; for a disk or system without a Trash)")


def _summary(info: library.AdapterInfo) -> dict:
    m = info.manifest
    return {"name": info.name, "status": info.status,
            "base_model": (m.get("base_model") or {}).get("repo_id")
            or (m.get("base_model") or {}).get("path", ""),
            "method": (m.get("settings") or {}).get("method", ""),
            "steps": m.get("steps"), "best_val_loss": m.get("best_val_loss"),
            "created": m.get("created"), "path": str(info.path)}


def _export_lines(info: library.AdapterInfo) -> list[str]:
    """The adapter's exported GGUFs (engine/adapter_exports.py): type, size, KL divergence
    from the full-precision model and perplexity (engine/export/quality.py), time, path."""
    from .adapter_exports import listed_export_records
    from .sizes import format_bytes

    lines = []
    for e in listed_export_records(info.path):
        q = e.quality
        figures = (f"KL {q.kl_mean:.3g}  ppl {q.perplexity:.4g}" if q is not None and q.measured
                   else "quality not measured")
        took = f"{e.seconds:.1f} s" if e.seconds is not None else "-"
        quant = e.quant + ("+imatrix" if e.imatrix else "")
        lines.append(f"  {'exports' if not lines else '':11} {quant:<7} "
                     f"{format_bytes(e.size):>9}  {figures}  {took}  {e.path}"
                     + ("  (replaced since)" if e.changed else ""))
    return lines


def _when(t) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


def run(args: argparse.Namespace, job) -> int:
    out = sys.stdout if args.events != "-" else sys.stderr
    if args.action == "list":
        rows = [_summary(a) for a in library.list_adapters()]
        if getattr(args, "json", False):
            print(json.dumps(rows, indent=2), file=out)
        elif not rows:
            print("no adapters yet (train one with `tailor train`)", file=out)
        else:
            print(f"{'NAME':24} {'STATUS':10} {'METHOD':6} {'STEPS':>6} {'BEST VAL':>9}  "
                  f"{'CREATED':16}  BASE MODEL", file=out)
            for r in rows:
                val = f"{r['best_val_loss']:.4f}" if isinstance(r["best_val_loss"], float) \
                    else "-"
                print(f"{r['name'][:24]:24} {r['status']:10} {r['method']:6} "
                      f"{r['steps'] if r['steps'] is not None else '-':>6} {val:>9}  "
                      f"{_when(r['created']):16}  {r['base_model']}", file=out)
        job.report(Finished(job=job.name, result=LibraryList(adapters=rows)))
    elif args.action == "show":
        info = library.get_adapter(args.name)
        if getattr(args, "json", False):
            print(json.dumps(info.manifest, indent=2, default=str), file=out)
        else:
            m = info.manifest
            s = _summary(info)
            print(f"{info.name}  ({info.status})\n  folder      {info.path}\n"
                  f"  base model  {s['base_model']}\n"
                  f"  dataset     {(m.get('dataset') or {}).get('path', '-')}\n"
                  f"  method      {s['method']}  settings: "
                  + ", ".join(f"{k}={v}" for k, v in (m.get('settings') or {}).items())
                  + f"\n  steps       {s['steps']}  best val loss {s['best_val_loss']}\n"
                  f"  created     {_when(m.get('created'))}  finished "
                  f"{_when(m.get('finished'))}", file=out)
            for line in _export_lines(info):
                print(line, file=out)
        job.report(Finished(job=job.name, result=AdapterRecord(manifest=info.manifest)))
    elif args.action == "rename":
        info = library.rename_adapter(args.name, args.new_name)
        print(f"renamed {args.name!r} to {info.name!r}", file=out)
        job.report(Finished(job=job.name, result=LibraryChange(info.name, str(info.path))))
    elif args.action == "duplicate":
        info = library.duplicate_adapter(args.name, args.new_name)
        print(f"copied {args.name!r} to {info.name!r}", file=out)
        job.report(Finished(job=job.name, result=LibraryChange(info.name, str(info.path))))
    elif args.action == "delete":
        gone = library.delete_adapter(args.name, permanently=args.permanently)
        print(gone.sentence(), file=out)
        job.report(Finished(job=job.name, result=LibraryChange(  # path: where it is now
            deleted=args.name, path=str(gone.trash or ""))))
    return 0
