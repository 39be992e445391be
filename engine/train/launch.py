"""`tailor train ... --ranks N | --hosts FILE|h1,h2`: a data-parallel run (engine/train/
distributed.py) started with MLX's own launcher, ``mlx.launch`` (ring backend).

Before anything starts, every remote host is checked over ssh (engine/train/hosts.py):
reachable, the same Tailor and MLX versions, the base model and the dataset at the same paths
(the dataset by sha256; a host without it gets a verified copy in its Tailor folder unless
--no-copy-data). Then mlx.launch runs the same ``tailor train`` on every rank; rank 0's events
come back here and are reported as this job's own, and the other ranks' one-line news (joined,
finished, failed) becomes the log's per-host progress. mlx.launch stops the other ranks when
one fails; its exit status does not say so, so the ranks' ends are read from its warnings.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..events import Cancelled, Log, TailorError, decode_event

from .hosts import (LOCAL, SSH_TIMEOUT_S, Host, Runner, check_hosts,  # noqa: F401
                    copy_datasets, dataset_for_rank, is_local, local_facts, parse_hosts,
                    ring_hosts, ssh_runner, write_host_file)
from .host_probe import sha256_of

_NODE_END = re.compile(r"Node with rank (\d+) (?:exited with code (-?\d+)|was killed)")
# what a rank other than 0 says on stderr (engine/train/launch.py _rank_reporter, dispatch)
_RANK_LINE = re.compile(r"^\[rank (\d+)\] (.*)$")


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
    if cfg.batch_size < ranks:
        raise TailorError(f"--batch-size {cfg.batch_size} is smaller than the number of ranks "
                          f"({ranks}): every rank needs an example per batch",
                          hint=f"use --batch-size {ranks} or more (the global batch, split "
                               "across the ranks)")


def launch_training(args, job, argv: list[str] | None = None, *,
                    runner: Runner = ssh_runner) -> int:
    """Check the hosts (copying the dataset where one lacks it), run mlx.launch, relay rank
    0's events and the other ranks' news; -> the exit status."""
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
    if model and data and not all(is_local(h) for h in hosts):
        report = check_hosts(hosts, model, data, runner=runner,
                             copy_data=not getattr(args, "no_copy_data", False))
        copy_datasets(report, job, runner=runner)
    ring = ring_hosts(hosts, runner)  # mlx.launch's ring wants IPs, not names
    argv = list(sys.argv[1:] if argv is None else argv)
    with tempfile.TemporaryDirectory(prefix="tailor-launch-") as tmp:
        given = Path(args.hosts).expanduser() if args.hosts else None
        hostfile = None if ring is None else (  # the user's own file keeps its "envs"
            given if given.is_file() and all(h.ips for h in hosts)
            else write_host_file(ring, Path(tmp)))
        cmd = mlx_launch_command(hosts, child_argv(argv), hostfile)
        job.report(Log(job=job.name, message=f"starting {len(hosts)} ranks with mlx.launch on "
                                             + ", ".join(h.ssh for h in hosts)))
        return _relay(_start_ranks(cmd), hosts, job, args.resume or args.name or "NAME")


def _start_ranks(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TAILOR_BACKEND": "ring"},
                            start_new_session=True)  # Ctrl-C here becomes a polite stop


class _RankNews:
    """The ranks' own lines (stderr, through mlx.launch) and rank 0's events turned into the
    log's per-host progress: which host each rank is on, when it joined and finished, and
    every tenth of the run the step all of them have reached (a step ends only once every
    rank's gradients are in: the ranks move in step)."""

    def __init__(self, hosts: list[Host], job):
        self.hosts, self.job = hosts, job
        self.lock = threading.Lock()  # two threads report: the stdout relay and this one
        self.next_step = 0

    def report(self, event) -> None:
        with self.lock:
            self.job.report(event)

    def where(self, rank: int) -> str:
        return self.hosts[rank].ssh if 0 <= rank < len(self.hosts) else "?"

    def rank_line(self, line: str) -> bool:
        """A ``[rank N] ...`` line as a Log event; False for any other line."""
        m = _RANK_LINE.match(line.strip())
        if not m:
            return False
        rank, text = int(m.group(1)), m.group(2)
        bad = text.startswith(("FAILED", "warning"))
        self.report(Log(job=self.job.name, level="warning" if bad else "info",
                        message=f"rank {rank} on {self.where(rank)}: {text}"))
        return True

    def event(self, event) -> None:
        """Rank 0's event, reported as this job's, with the per-host lines it implies."""
        self.report(event)
        info = getattr(event, "info", None)
        if event.kind == "started" and isinstance(info, dict) and info.get("distributed"):
            names = info["distributed"].get("hosts") or []
            self.report(Log(job=self.job.name, message="ranks: " + ", ".join(
                f"{r} on {self.where(r)}" + (f" ({n})" if n and n != self.where(r) else "")
                for r, n in enumerate(names))))
        if event.kind == "step" and event.iteration >= self.next_step:
            total = event.total_iterations or 0
            self.next_step = event.iteration + max(1, total // 10)
            self.report(Log(job=self.job.name, message=(
                f"step {event.iteration}/{total or '?'} done on every rank: "
                + ", ".join(f"{r} on {h.ssh}" for r, h in enumerate(self.hosts)))))


def _relay(proc: subprocess.Popen, hosts: list[Host], job, name: str) -> int:
    ends: dict[int, str] = {}
    news = _RankNews(hosts, job)

    def read_stderr() -> None:
        for line in proc.stderr:
            m = _NODE_END.search(line)
            if m:
                ends[int(m.group(1))] = (f"exited with code {m.group(2)}" if m.group(2)
                                         else "was killed")
            elif news.rank_line(line):
                pass
            elif line.strip() and not line.startswith(("[ring]", "[train]", "  hint:")):
                # (rank 0's own terminal lines: its events are reported here already)
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
            news.rank_line(line)  # (mlx.launch runs remote ranks under `ssh -tt`: their
            continue              # stderr arrives here, in the same terminal stream)
        try:
            event = decode_event(line)
        except (ValueError, KeyError, TypeError):
            continue
        news.event(event)
        if event.kind in ("finished", "failed", "cancelled"):
            ending = event.kind
    proc.wait()
    threads[0].join(timeout=5)
    lost = [f"rank {r} on {hosts[r].ssh if r < len(hosts) else '?'} {how}"
            for r, how in sorted(ends.items())]
    if lost and ending != "finished":
        news.report(Log(job=job.name, level="warning", message="; ".join(lost)))
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
    watch_launcher_stop(job.cancel, sys.stdin)
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

    data, copied = dataset_for_rank(settings["data"], settings.get("data_sha256", ""))
    began = time.monotonic()
    _rank_says(rank, f"joined on {platform.node()}"
               + (f"; reads the dataset's verified copy {data}" if copied else ""))
    try:
        distributed.train_worker(settings["model"], data, settings["name"],
                                 TrainConfig.from_dict(settings["cfg"]),
                                 DataConfig(**settings["data_config"]), job=job)
    except Cancelled:
        _rank_says(rank, f"stopped with the others after {time.monotonic() - began:.0f} s")
        return 0  # a stop all ranks agreed on: rank 0 saves and says so (a non-zero exit
        # here would make mlx.launch terminate rank 0 mid-save)
    _rank_says(rank, f"finished on {platform.node()} after {time.monotonic() - began:.0f} s")
    return 0


def _rank_says(rank: int, text: str) -> None:
    """One line for the launcher's log (_RankNews.rank_line), on stderr through mlx.launch."""
    sys.stderr.write(f"[rank {rank}] {text}\n")
    sys.stderr.flush()


def watch_launcher_stop(cancel, stdin) -> None:
    """A rank's stop arrives on its stdin from mlx.launch. A remote rank runs under `ssh -tt`,
    so its stdin is a terminal, which the runner (engine/cli.py) leaves unwatched: watch it
    here (without this a stop never reached a rank on another host; seen over real ssh)."""
    if stdin is not None and stdin.isatty():
        cancel.watch_stdin(stdin)


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
    sha = sha256_of(str(data)) if Path(data).is_file() else ""  # the ranks find it by this
    return {"model": str(model), "data": str(data), "name": name, "cfg": cfg.to_dict(),
            "data_config": dataclasses.asdict(data_config), "data_sha256": sha}


def _rank_reporter(rank: int):
    """A rank other than 0 says, on stderr prefixed with its rank, what went wrong and every
    tenth of the run its own step rate and memory (rank 0's Step events are the run's)."""
    from ..events import Failed, Step
    from ..sizes import format_bytes

    next_step = [0]

    def report(event) -> None:
        if isinstance(event, Step) and event.iteration >= next_step[0]:
            next_step[0] = event.iteration + max(1, (event.total_iterations or 0) // 10)
            memory = event.peak_memory_gb * 1e9  # (a tiny model's is a few MB)
            _rank_says(rank, f"step {event.iteration}/{event.total_iterations or '?'} at "
                             f"{event.tokens_per_second:.0f} tokens/s on this host"
                             + (f", peak memory {format_bytes(memory)}" if memory else ""))
        elif isinstance(event, Failed):
            _rank_says(rank, f"FAILED: {event.message}"
                       + (f" ({event.hint})" if getattr(event, "hint", "") else ""))
        elif isinstance(event, Log) and event.level in ("warning", "error"):
            _rank_says(rank, f"warning: {event.message}")

    return report
