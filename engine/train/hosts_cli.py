"""`tailor hosts check --hosts FILE|H1,H2 [--model M] [--data D]`: the checks `tailor train
--hosts` makes before a run (engine/train/hosts.py), every host reported instead of stopping
at the first problem. The app's "Test connection" runs it. Nothing is copied or started.
"""
from __future__ import annotations

import argparse
import sys

from ..cli_options import add_action
from ..events import Finished
from ..results import HostCheck, HostsReport


def configure(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = add_action(sub, "check", help="check each host of a distributed run over ssh: "
                                          "reachable, Tailor/MLX versions, model and dataset")
    check.add_argument("--hosts", required=True, metavar="FILE|H1,H2",
                       help="an MLX host file (JSON) or host names separated by commas")
    check.add_argument("--model", default="", help="base model folder to look for on each host")
    check.add_argument("--data", default="", help="dataset to look for (compared by sha256)")
    check.add_argument("--no-copy-data", action="store_true",
                       help="report a host without the dataset as a problem (as `tailor train "
                            "--no-copy-data` would), not as 'will be copied'")


def check_connection(hosts: str, model: str, data: str, *, job, copy_data: bool = True,
                     runner=None) -> HostsReport:
    """Every host of ``hosts`` checked as the launcher checks it; -> the report."""
    from .hosts import parse_hosts, ssh_runner, survey

    found = parse_hosts(hosts, 0)
    job.started({"hosts": hosts, "model": model, "data": data})
    say = job.progress("checking hosts")
    say(0, 1, f"checking {len(found)} hosts over ssh")
    report = survey(found, model, data, runner=runner or ssh_runner, copy_data=copy_data)
    say(1, 1, "checked")
    return report


def describe(h: HostCheck) -> str:
    """One line per host, as the terminal shows it."""
    where = "this machine (no ssh)" if h.local else h.host
    if not h.reachable:
        return f"✗ {where}: {h.message}\n    {h.hint}"
    parts = [f"Tailor {h.tailor or '?'}", f"MLX {h.mlx or '?'}"]
    if h.model:
        parts.append(f"model {h.model}")
    if h.dataset:
        parts.append(f"dataset {h.dataset}")
    line = f"{'✓' if h.ok else '✗'} {where}: reachable, " + ", ".join(parts)
    return line + (f"\n    {h.message}\n    {h.hint}" if not h.ok else "")


def run(args: argparse.Namespace, job) -> int:
    report = check_connection(args.hosts, args.model, args.data, job=job,
                              copy_data=not args.no_copy_data)
    out = sys.stdout if args.events != "-" else sys.stderr
    if not args.quiet:
        for h in report.hosts:
            print(describe(h), file=out)
    job.report(Finished(job=job.name, result=report))
    return 0 if report.ok else 1
