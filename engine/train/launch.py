"""`tailor train ... --ranks N | --hosts FILE|h1,h2`: a data-parallel run (engine/train/
distributed.py) started with MLX's own launcher, ``mlx.launch`` (ring backend).

Before anything starts, every remote host is checked over ssh: reachable, the same Tailor and
MLX versions, the base model and the dataset at the same paths (the dataset by sha256). Then
mlx.launch runs the same ``tailor train`` on every rank; rank 0's events come back here and are
reported as this job's own. mlx.launch stops the other ranks when one fails; its exit status
does not say so, so the ranks' ends are read from its warnings.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..events import Cancelled, Log, TailorError, decode_event

LOCAL = "127.0.0.1"
SSH_TIMEOUT_S = 10
_NODE_END = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")


@dataclass
class Host:
    ssh: str            # the name ssh connects to (127.0.0.1: this machine)
    ips: list[str]


def parse_hosts(hosts: str | None, ranks: int) -> list[Host]:
    """``--hosts`` (an MLX host file, or names separated by commas) or ``--ranks N`` -> the
    ranks' hosts, one per rank."""
    if not hosts:
        return [Host(LOCAL, [LOCAL]) for _ in range(max(1, ranks))]
    path = Path(hosts).expanduser()
    if path.is_file():
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            found = [Host(str(e["ssh"]), [str(i) for i in e.get("ips", [])]) for e in entries]
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise TailorError(f"{path}: not an MLX host file ({e})",
                              hint='a JSON list like [{"ssh": "mac1", "ips": ["10.0.0.1"]}, '
                                   '{"ssh": "mac2", "ips": ["10.0.0.2"]}]') from None
    else:
        found = [Host(h.strip(), []) for h in hosts.split(",") if h.strip()]
    if len(found) < 2 and ranks <= 1:
        raise TailorError(f"--hosts {hosts!r} names {len(found)} host; a distributed run "
                          "needs two or more", hint="list every machine, this one included")
    return found


def is_local(host: Host) -> bool:
    return host.ssh in (LOCAL, "localhost")


# what each remote host runs (with its own python): versions and the inputs at these paths
_PROBE = r"""
import hashlib, json, os, sys
model, data = sys.argv[1], sys.argv[2]
out = {"python": sys.executable}
try:
    import engine; out["tailor"] = engine.__version__
except Exception as e: out["tailor"] = None
try:
    import mlx.core as mx; out["mlx"] = mx.__version__
except Exception as e: out["mlx"] = None
out["model"] = os.path.isfile(os.path.join(model, "config.json"))
if os.path.isfile(data):
    h = hashlib.sha256()
    with open(data, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
    out["data"] = h.hexdigest()
else:
    out["data"] = os.path.isdir(data) or None
print(json.dumps(out))
"""

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def ssh_runner(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT_S + 50)


def local_facts(model: str, data: str) -> dict:
    import mlx.core as mx

    from .. import __version__

    facts = {"tailor": __version__, "mlx": mx.__version__, "model": True, "data": True}
    if Path(data).is_file():
        h = hashlib.sha256()
        with open(data, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        facts["data"] = h.hexdigest()
    return facts


def check_hosts(hosts: list[Host], model: str, data: str, *,
                runner: Runner = ssh_runner, cwd: str | None = None) -> None:
    """Refuse (naming the host and why) unless every remote host answers over ssh with the
    same Tailor and MLX versions and has the base model and the dataset at the same paths."""
    model, data = str(Path(model).expanduser().resolve()), str(Path(data).expanduser().resolve())
    mine = local_facts(model, data)
    cwd = cwd or os.getcwd()
    for host in hosts:
        if is_local(host):
            continue
        remote = f"cd {shlex.quote(cwd)} && {shlex.quote(sys.executable)} -c " \
                 f"{shlex.quote(_PROBE)} {shlex.quote(model)} {shlex.quote(data)}"
        argv = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}",
                host.ssh, remote]
        try:
            done = runner(argv)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _unreachable(host, str(e)) from None
        if done.returncode != 0:
            raise _unreachable(host, (done.stderr or done.stdout or "").strip()[-300:]
                               or f"ssh exited with {done.returncode}")
        try:
            theirs = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TailorError(f"host {host.ssh}: {sys.executable} did not answer the check "
                              f"({done.stdout.strip()[-200:]!r})",
                              hint=f"install Tailor on {host.ssh} at the same path as here "
                                   f"({sys.executable})") from None
        _compare(host, mine, theirs, model, data)


def _unreachable(host: Host, why: str) -> TailorError:
    return TailorError(f"host {host.ssh} cannot be reached over ssh: {why}",
                       hint=f"check `ssh {host.ssh}` works without a password (ssh-copy-id), "
                            "and that the machine is awake and on the network")


def _compare(host: Host, mine: dict, theirs: dict, model: str, data: str) -> None:
    for key, label in (("tailor", "Tailor"), ("mlx", "MLX")):
        if theirs.get(key) != mine[key]:
            raise TailorError(f"host {host.ssh} has {label} {theirs.get(key) or 'missing'}, "
                              f"this machine {mine[key]}",
                              hint=f"install the same {label} version on every host")
    if not theirs.get("model"):
        raise TailorError(f"host {host.ssh} has no base model at {model}",
                          hint=f"copy the model folder to {host.ssh} at the same path")
    if not theirs.get("data"):
        raise TailorError(f"host {host.ssh} has no dataset at {data}",
                          hint=f"copy the dataset to {host.ssh} at the same path")
    if theirs["data"] != mine["data"]:
        raise TailorError(f"host {host.ssh} has a different dataset at {data} (sha256 "
                          f"{str(theirs['data'])[:12]}…, here {str(mine['data'])[:12]}…)",
                          hint=f"copy this machine's dataset to {host.ssh}")


def child_argv(argv: list[str]) -> list[str]:
    """The command every rank runs: this one without --ranks/--hosts/--events/--quiet, with
    rank 0's events on stdout for this process to read."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--ranks", "--hosts", "--events"):
            skip = "=" not in a
            continue
        if name == "--quiet":
            continue
        out.append(a)
    return [*out, "--quiet", "--events", "-"]


def mlx_launch_command(hosts: list[Host], argv: list[str], hostfile: Path | None) -> list[str]:
    launcher = str(Path(sys.executable).with_name("mlx.launch"))
    if all(is_local(h) for h in hosts):
        where = ["-n", str(len(hosts))]
    elif hostfile is not None:
        where = ["--hostfile", str(hostfile)]
    else:
        where = ["--hosts", ",".join(h.ssh for h in hosts)]
    return [launcher, "--backend", "ring", *where, "--cwd", os.getcwd(), "--",
            sys.executable, "-m", "engine", *argv]


def refuse_unsupported(args, ranks: int) -> None:
    """What a distributed run cannot do, said before any rank starts (a refusal inside the
    ranks would come after the library entry was opened)."""
    from ..configs import overrides_from_args
    from .config import TrainConfig, make_config

    if args.resume:
        from .run import _saved_config

        cfg = _saved_config(args.resume)
    else:
        cfg = make_config(getattr(args, "preset", None), **overrides_from_args(TrainConfig, args))
    if cfg.objective != "sft":
        raise TailorError(f"--objective {cfg.objective} cannot run on several ranks yet",
                          hint="train it on one machine (without --ranks/--hosts)")
    if cfg.batch_size < ranks:
        raise TailorError(f"--batch-size {cfg.batch_size} is smaller than the number of ranks "
                          f"({ranks}): every rank needs an example per batch",
                          hint=f"use --batch-size {ranks} or more (the global batch, split "
                               "across the ranks)")


def launch_training(args, job, argv: list[str] | None = None, *,
                    runner: Runner = ssh_runner) -> int:
    """Check the hosts, run mlx.launch, relay rank 0's events; -> the exit status."""
    missing = [] if args.resume else [f"--{f}" for f in ("model", "data", "name")
                                      if not getattr(args, f)]
    if missing:  # said before any rank starts
        raise TailorError("missing " + ", ".join(missing),
                          hint="tailor train --model PATH --data FILE --name NAME --ranks 2")
    hosts = parse_hosts(args.hosts, args.ranks)
    refuse_unsupported(args, len(hosts))
    model, data = args.model, args.data
    if args.resume and not (model and data):  # the run's own inputs
        from .. import library

        m = library.get_adapter(args.resume).manifest
        model, data = model or m["base_model"]["path"], data or m["dataset"]["path"]
    if model and data:
        check_hosts(hosts, model, data, runner=runner)
    hostfile = Path(args.hosts).expanduser() if args.hosts and Path(
        args.hosts).expanduser().is_file() else None
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = mlx_launch_command(hosts, child_argv(argv), hostfile)
    job.report(Log(job=job.name, message=f"starting {len(hosts)} ranks with mlx.launch on "
                                         + ", ".join(h.ssh for h in hosts)))
    env = {**os.environ, "TAILOR_BACKEND": "ring"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # Ctrl-C here becomes a polite stop
    return _relay(proc, hosts, job, args.resume or args.name or "NAME")


def _relay(proc: subprocess.Popen, hosts: list[Host], job, name: str) -> int:
    ends: dict[int, str] = {}
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        for line in proc.stderr:
            m = _NODE_END.search(line)
            if m:
                ends[int(m.group(1))] = (f"exited with code {m.group(2)}" if m.group(2)
                                         else "was killed")
            elif line.strip() and not line.startswith(("[ring]", "[train]", "  hint:")):
                # (rank 0's own terminal lines: its events are reported here already)
                stderr_lines.append(line.rstrip())
                sys.stderr.write(line)

    def forward_stop() -> None:  # the job's stop (Ctrl-C, `stop` on stdin) reaches every rank
        job.cancel._event.wait()
        try:
            proc.stdin.write("stop\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            pass

    threads = [threading.Thread(target=read_stderr, daemon=True),
               threading.Thread(target=forward_stop, daemon=True)]
    for t in threads:
        t.start()
    ending = None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        try:
            event = decode_event(line)
        except (ValueError, KeyError, TypeError):
            continue
        job.report(event)
        if event.kind in ("finished", "failed", "cancelled"):
            ending = event.kind
    proc.wait()
    threads[0].join(timeout=5)
    lost = [f"rank {r} on {hosts[r].ssh if r < len(hosts) else '?'} {how}"
            for r, how in sorted(ends.items())]
    if lost and ending != "finished":
        job.report(Log(job=job.name, level="warning", message="; ".join(lost)))
    if ending == "finished":
        return 0
    if ending == "cancelled":
        return 130
    if ending == "failed":
        return 1
    raise TailorError("the distributed run ended without a result: "
                      + ("; ".join(lost) or f"mlx.launch exited with {proc.returncode}"),
                      hint=f"see the messages above; the last complete checkpoint resumes "
                           f"with `tailor train --resume {name}` (alone or on several ranks)")


def dispatch(args, job) -> int | None:
    """`tailor train` in a distributed setting: the launcher (--ranks/--hosts given, not yet a
    rank) -> its exit status; a rank other than 0 -> trains silently, 0; rank 0 -> None (it
    runs the ordinary command, in step with the others)."""
    from . import distributed

    if not distributed.rank_environment():
        if (args.ranks or 1) > 1 or args.hosts:
            return launch_training(args, job)
        return None
    if distributed.group() is None:
        return None
    distributed.watch_terminate(job.cancel)  # for the whole process: writes are never cut off
    try:
        settings = distributed.shared_settings(
            _rank0_settings(args) if distributed.world()[0] == 0 else {})
    except RuntimeError as e:  # rank 0 refused the run (and said why) before sharing it
        if distributed.is_peer_lost(e):
            raise TailorError("rank 0 ended before training started") from None
        raise
    if distributed.world()[0] == 0:
        return None
    rank = distributed.world()[0]
    job.report = _rank_reporter(rank)
    from ..data import DataConfig
    from .config import TrainConfig

    try:
        distributed.train_worker(settings["model"], settings["data"], settings["name"],
                                 TrainConfig.from_dict(settings["cfg"]),
                                 DataConfig(**settings["data_config"]), job=job)
    except Cancelled:
        pass  # a stop all ranks agreed on: rank 0 saves and says so (a non-zero exit here
        # would make mlx.launch terminate rank 0 mid-save)
    return 0


def _rank0_settings(args) -> dict:
    """What rank 0 will train with (for a resume: the run's saved settings and inputs)."""
    import dataclasses

    from ..configs import overrides_from_args
    from ..data import DataConfig
    from .config import TrainConfig, make_config

    overrides = overrides_from_args(TrainConfig, args)
    data_over = overrides_from_args(DataConfig, args)
    data_over.pop("max_seq_length", None)
    if args.resume:
        from .run import _resume_settings

        from .config import PRESETS, merge_resume_config
        from .run import _saved_config

        given = merge_resume_config(_saved_config(args.resume),
                                    {**(PRESETS.get(args.preset, {}) if args.preset else {}),
                                     **overrides}, args.resume) \
            if (overrides or args.preset) else None
        model, data, cfg, data_config, _ = _resume_settings(
            args.resume, args.model, args.data, given, DataConfig(**data_over) if data_over
            else None, None)
        name = args.resume
    else:
        model, data, name = args.model, args.data, args.name
        cfg, data_config = make_config(args.preset, **overrides), DataConfig(**data_over)
    data_config = data_config or DataConfig()
    data_config.max_seq_length = cfg.max_seq_length
    data_config.min_examples = max(data_config.min_examples, cfg.batch_size)
    return {"model": str(model), "data": str(data), "name": name, "cfg": cfg.to_dict(),
            "data_config": dataclasses.asdict(data_config)}


def _rank_reporter(rank: int):
    """A rank other than 0 says only what went wrong, on stderr, prefixed with its rank."""
    from ..events import Failed

    def report(event) -> None:
        if isinstance(event, Failed):
            sys.stderr.write(f"[rank {rank}] FAILED: {event.message}\n")
        elif isinstance(event, Log) and event.level in ("warning", "error"):
            sys.stderr.write(f"[rank {rank}] {event.message}\n")
        sys.stderr.flush()

    return report
