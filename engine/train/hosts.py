"""The hosts of a distributed run: the list, the checks made over ssh before anything starts,
and the dataset copied (by sha256) to a host that lacks it.

Every remote command goes through one ``Runner``: ``ssh_runner`` runs the real ``ssh`` (the
file to send, if any, streamed on its stdin); tests inject a runner that answers as a host
would, or runs the remote part locally. The same checks serve the launcher (engine/train/
launch.py, which refuses on the first problem) and `tailor hosts check` (engine/train/
hosts_cli.py, which reports every host: the app's "Test connection").
"""
from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..events import TailorError
from ..results import (DATASET_COPY_THERE, DATASET_DIFFERENT, DATASET_MISSING, DATASET_SAME,
                       DATASET_WILL_COPY, HostCheck, HostsReport)
from ..sizes import format_bytes
from . import host_probe

LOCAL = "127.0.0.1"
SSH_TIMEOUT_S = 10
SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_TIMEOUT_S}"]
HOST_FILE_HINT = ('a JSON list like [{"ssh": "mac1", "ips": ["10.0.0.1"]}, '
                  '{"ssh": "mac2", "ips": ["10.0.0.2"]}] (MLX\'s host file)')


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
        found = _read_host_file(path)
    elif path.suffix.lower() == ".json" or os.sep in hosts:
        raise TailorError(f"{path}: no such host file", hint=HOST_FILE_HINT)
    else:
        found = [Host(h.strip(), []) for h in hosts.split(",") if h.strip()]
        bad = [h.ssh for h in found if any(c.isspace() or c in "'\";&|$`" for c in h.ssh)]
        if bad:
            raise TailorError(f"--hosts: {bad[0]!r} is not a host name",
                              hint="host names (or IPs) separated by commas, e.g. mac1,mac2")
    if any(is_local(h) for h in found) and not all(is_local(h) for h in found):
        raise TailorError(f"--hosts: {LOCAL} cannot be listed with other machines (they would "
                          "connect to themselves)",
                          hint="name this Mac by its network name or IP, like the others")
    if len(found) < 2 and ranks <= 1:
        raise TailorError(f"--hosts {hosts!r} names {len(found)} host; a distributed run "
                          "needs two or more", hint="list every machine, this one included")
    return found


def _read_host_file(path: Path) -> list[Host]:
    """MLX's host file: a list of {"ssh", "ips"}, or {"hosts": [...], "backend", "envs"}."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(entries, dict):
            entries = entries["hosts"]
        if not isinstance(entries, list):
            raise TypeError("not a list of hosts")
        return [Host(str(e["ssh"]), [str(i) for i in e.get("ips", [])]) for e in entries]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        detail = f"no {e} entry" if isinstance(e, KeyError) else str(e)
        raise TailorError(f"{path}{where}: not an MLX host file ({detail})",
                          hint=HOST_FILE_HINT) from None


def is_local(host: Host) -> bool:
    return host.ssh in (LOCAL, "localhost")


# -- running commands on a host -------------------------------------------------------------
class Runner(Protocol):
    def __call__(self, argv: list[str], send: Path | None = None,
                 progress: Callable[[int, int], None] | None = None
                 ) -> subprocess.CompletedProcess: ...


def ssh_runner(argv: list[str], send: Path | None = None,
               progress: Callable[[int, int], None] | None = None
               ) -> subprocess.CompletedProcess:
    """Run ``argv`` (an ssh command line); ``send``: a file streamed on its stdin, with
    ``progress(bytes_sent, size)`` after each block (which may raise Cancelled)."""
    if send is None:
        return subprocess.run(argv, capture_output=True, text=True, timeout=SSH_TIMEOUT_S + 50)
    size = send.stat().st_size
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        done = 0
        with open(send, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                proc.stdin.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, size)
    except BrokenPipeError:  # the far end stopped reading: its own answer says why
        pass
    except BaseException:  # (a cancel): the far end reads a short file, and removes it
        proc.kill()
        proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()
        raise
    with contextlib.suppress(OSError):
        proc.stdin.close()
    proc.stdin = None  # (closed: communicate would flush it)
    out, err = proc.communicate(timeout=SSH_TIMEOUT_S + 600)
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode("utf-8", "replace"),
                                       err.decode("utf-8", "replace"))


def _probe_source() -> str:
    return Path(host_probe.__file__).read_text(encoding="utf-8")


def remote_command(host: Host, cwd: str, *request: str) -> list[str]:
    """ssh HOST 'cd CWD && PYTHON -c <host_probe.py> REQUEST...' (this machine's paths: every
    host has Tailor at the same path)."""
    remote = (f"cd {shlex.quote(cwd)} && {shlex.quote(sys.executable)} -c "
              f"{shlex.quote(_probe_source())} " + " ".join(map(shlex.quote, request)))
    return ["ssh", *SSH_OPTIONS, host.ssh, remote]


def _unreachable(host: Host, why: str) -> TailorError:
    return TailorError(f"host {host.ssh} cannot be reached over ssh: {why}",
                       hint=f"check `ssh {host.ssh}` works without a password (ssh-copy-id), "
                            "and that the machine is awake and on the network")


def _answer(host: Host, done: subprocess.CompletedProcess) -> dict:
    """The JSON line a host printed, or the TailorError saying why there is none."""
    said = (done.stderr or done.stdout or "").strip()[-300:]
    if done.returncode == 255:  # ssh's own status: it could not connect or log in
        raise _unreachable(host, said or "ssh exited with 255")
    if done.returncode != 0 and not done.stdout.strip():
        raise TailorError(f"host {host.ssh} answered, but the check could not run there: "
                          f"{said or f'exit status {done.returncode}'}",
                          hint=f"install Tailor on {host.ssh} at the same path as here "
                               f"({sys.executable}, run from {os.getcwd()})")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TailorError(f"host {host.ssh}: {sys.executable} did not answer the check "
                          f"({(done.stdout or done.stderr).strip()[-200:]!r})",
                          hint=f"install Tailor on {host.ssh} at the same path as here "
                               f"({sys.executable})") from None


# -- the checks -----------------------------------------------------------------------------
def local_facts(model: str, data: str) -> dict:
    """This machine's answer (the model is not checked: rank 0 loads it and says so itself)."""
    import mlx.core as mx

    from .. import __version__

    sha = host_probe.sha256_of(data) if Path(data).is_file() else ""
    return {"tailor": __version__, "mlx": mx.__version__, "model": True,
            "data": sha or True, "node": platform.node()}


def survey(hosts: list[Host], model: str = "", data: str = "", *, runner: Runner = ssh_runner,
           cwd: str | None = None, copy_data: bool = True) -> HostsReport:
    """Every host checked (none refused): reachable, the same Tailor and MLX, the model and
    the dataset at the same paths (the dataset by sha256; a missing or different one is
    "will be copied" when ``copy_data`` and it is a file)."""
    model = _model_on_hosts(model)
    data = str(Path(data).expanduser().resolve()) if data else ""
    mine = local_facts(model, data) if data else local_facts(model, os.devnull)
    cwd = cwd or os.getcwd()
    seen: dict[str, HostCheck] = {}
    out = []
    for rank, host in enumerate(hosts):
        if host.ssh not in seen:
            seen[host.ssh] = _check_one(host, rank, mine, model, data, runner, cwd, copy_data)
        out.append(HostCheck.coerce(seen[host.ssh].to_dict()))
    return HostsReport(hosts=out, model=model, data=data)


def _model_on_hosts(model: str) -> str:
    """What each host looks for: the folder's absolute path, or ``hf:OWNER/NAME`` for a repo id
    (each host's own Hugging Face cache; the ranks resolve it there as here)."""
    if not model:
        return ""
    from ..models.resolve import looks_like_path

    if looks_like_path(model):
        return str(Path(model).expanduser().resolve())
    return host_probe.HUB_PREFIX + model.strip()


def _check_one(host: Host, rank: int, mine: dict, model: str, data: str, runner: Runner,
               cwd: str, copy_data: bool) -> HostCheck:
    check = HostCheck(host=host.ssh, ips=list(host.ips), local=is_local(host))
    if check.local:
        check.reachable, check.ok = True, True
        check.tailor, check.mlx, check.node = mine["tailor"], mine["mlx"], mine["node"]
        check.model = "present" if model else ""
        check.dataset, check.dataset_path = (DATASET_SAME, data) if data else ("", "")
        return check
    sha = mine["data"] if isinstance(mine["data"], str) else ""
    try:
        try:
            done = runner(remote_command(host, cwd, "facts", model or os.devnull,
                                         data or os.devnull, sha, Path(data).suffix))
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _unreachable(host, str(e)) from None
        theirs = _answer(host, done)
        check.reachable = True
        check.tailor, check.mlx = str(theirs.get("tailor") or ""), str(theirs.get("mlx") or "")
        check.node = str(theirs.get("node") or "")
        _compare(check, rank, mine, theirs, model, data, copy_data)
    except TailorError as e:
        check.message, check.hint = e.message, e.hint
        return check
    check.ok = True
    return check


def _compare(check: HostCheck, rank: int, mine: dict, theirs: dict, model: str, data: str,
             copy_data: bool) -> None:
    """Fill ``check`` from a host's answer; raise the first difference that stops a run."""
    name = check.host
    for key, label in (("tailor", "Tailor"), ("mlx", "MLX")):
        if theirs.get(key) != mine[key]:
            raise TailorError(f"host {name} has {label} {theirs.get(key) or 'missing'}, "
                              f"this machine {mine[key]}",
                              hint=f"install the same {label} version on every host")
    if rank == 0 and theirs.get("node") and theirs["node"] != mine["node"]:
        raise TailorError(f"the first host, {name}, is another machine ({theirs['node']}, this "
                          f"one is {mine['node']}): rank 0 runs on the first host and writes "
                          "the adapter there", hint="list this Mac first (its name or IP)")
    if model:
        check.model = "present" if theirs.get("model") else "missing"
        if not theirs.get("model") and model.startswith(host_probe.HUB_PREFIX):
            repo = model[len(host_probe.HUB_PREFIX):]
            raise TailorError(f"host {name} does not have {repo} in its Hugging Face cache",
                              hint=f"download it there first (`tailor model download {repo}` "
                                   f"on {name}): models are too big to fetch silently")
        if not theirs.get("model"):
            raise TailorError(f"host {name} has no base model at {model}",
                              hint=f"copy the model folder to {name} at the same path (models "
                                   "are too big to copy for you; `rsync -a` or a shared disk)")
    if data:
        _compare_dataset(check, mine, theirs, data, copy_data)


def _compare_dataset(check: HostCheck, mine: dict, theirs: dict, data: str,
                     copy_data: bool) -> None:
    name, here, there = check.host, mine["data"], theirs.get("data")
    if there and there == here:
        check.dataset, check.dataset_path = DATASET_SAME, data
        return
    check.dataset = DATASET_MISSING if not there else DATASET_DIFFERENT
    if isinstance(here, str) and theirs.get("copy"):
        check.dataset, check.dataset_path = DATASET_COPY_THERE, str(theirs["copy"])
        return
    if isinstance(here, str) and copy_data:
        check.dataset = DATASET_WILL_COPY
        check.dataset_path = os.path.join(str(theirs.get("copies") or "?"),
                                          here + Path(data).suffix)
        return
    how = ("copy the dataset folder to the same path there" if not isinstance(here, str)
           else "copy it to the same path there, or leave out --no-copy-data and Tailor "
                "copies it into its own folder on that host")
    if not there:
        raise TailorError(f"host {name} has no dataset at {data}", hint=how)
    raise TailorError(f"host {name} has a different dataset at {data} (sha256 "
                      f"{str(there)[:12]}…, here {str(here)[:12]}…)", hint=how)


def first_problem(report: HostsReport) -> TailorError | None:
    for h in report.hosts:
        if not h.ok:
            return TailorError(h.message, hint=h.hint)
    return None


def check_hosts(hosts: list[Host], model: str, data: str, *, runner: Runner = ssh_runner,
                cwd: str | None = None, copy_data: bool = False) -> HostsReport:
    """Refuse (naming the host and why) unless every remote host answers over ssh with the
    same Tailor and MLX versions and has the base model and the dataset at the same paths
    (with ``copy_data``, a dataset file it lacks is "will be copied": see copy_datasets)."""
    report = survey(hosts, model, data, runner=runner, cwd=cwd, copy_data=copy_data)
    problem = first_problem(report)
    if problem is not None:
        raise problem
    return report


# -- the dataset copy -----------------------------------------------------------------------
def copy_datasets(report: HostsReport, job, *, runner: Runner = ssh_runner,
                  cwd: str | None = None) -> list[str]:
    """Send the dataset to each host the report says lacks it, into that host's Tailor folder
    under its sha256 (verified there before it takes the name); -> the hosts copied to."""
    todo = list(dict.fromkeys(h.host for h in report.hosts if h.dataset == DATASET_WILL_COPY))
    if not todo:
        return []
    data = Path(report.data)
    size = data.stat().st_size
    sha = host_probe.sha256_of(str(data))
    for i, name in enumerate(todo):
        host = Host(name, [])
        say = job.progress(f"copying the dataset to {name}", i / len(todo), (i + 1) / len(todo))
        job.log(f"copying {data.name} ({format_bytes(size)}) to {name} "
                f"({i + 1} of {len(todo)}), into Tailor's folder there")
        began = time.monotonic()

        def progress(sent: int, total: int, name=name, say=say) -> None:
            job.cancel.raise_if_cancelled()
            say(sent, total, f"copying {data.name} to {name}")

        argv = remote_command(host, cwd or os.getcwd(), "receive", sha, data.suffix, str(size))
        try:
            done = runner(argv, send=data, progress=progress)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise _unreachable(host, str(e)) from None
        answer = _answer(host, done)
        if "error" in answer or done.returncode != 0:
            raise TailorError(f"copying {data} to {name} failed: "
                              f"{answer.get('error') or f'exit status {done.returncode}'}",
                              hint=f"check {name} has room in its Tailor folder, or copy the "
                                   "dataset there yourself at the same path")
        job.log(f"copied {data.name} to {name}:{answer['path']} in "
                f"{time.monotonic() - began:.1f} s (sha256 verified there)")
    return todo


def dataset_for_rank(path: str, sha: str) -> tuple[str, bool]:
    """Where this rank reads the run's dataset (sha256 ``sha``, rank 0's ``path``): that path
    when it holds the same bytes, else the verified copy the launcher sent; -> (path,
    is_copy). "" for ``sha``: a folder dataset, checked by path alone."""
    if not sha or (os.path.isfile(path) and host_probe.sha256_of(path) == sha):
        return path, False
    copy = host_probe.copy_path(sha, Path(path).suffix)
    if copy and os.path.isfile(copy) and host_probe.sha256_of(copy) == sha:
        return copy, True
    raise TailorError(f"{platform.node()} has neither the run's dataset at {path} nor a copy "
                      f"of it (sha256 {sha[:12]}…)",
                      hint="start the run with tailor train --hosts from the first host (it "
                           "copies the dataset first), or copy the dataset to the same path")


# -- what mlx.launch is given ---------------------------------------------------------------
def resolve_ips(host: Host, runner: Runner = ssh_runner) -> list[str]:
    """The IPs the ring backend connects to: the host file's, or the address ssh resolves
    the name to (``ssh -G`` reads ~/.ssh/config aliases; mlx.launch needs IPs)."""
    if host.ips:
        return list(host.ips)
    try:
        ipaddress.ip_address(host.ssh)
        return [host.ssh]
    except ValueError:
        pass
    name = host.ssh
    try:
        done = runner(["ssh", "-G", host.ssh])
        for line in (done.stdout or "").splitlines():
            if line.lower().startswith("hostname "):
                name = line.split(None, 1)[1].strip()
        return [socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0]]
    except (OSError, subprocess.TimeoutExpired, IndexError) as e:
        raise TailorError(f"cannot find the IP address of host {host.ssh} ({e})",
                          hint="give each host's IP in a host file: " + HOST_FILE_HINT) from None


def ring_hosts(hosts: list[Host], runner: Runner = ssh_runner) -> list[Host] | None:
    """The hosts with the IPs the ring uses; None when every rank is on this machine."""
    if all(is_local(h) for h in hosts):
        return None
    return [Host(h.ssh, resolve_ips(h, runner)) for h in hosts]


def write_host_file(hosts: list[Host], folder: Path) -> Path:
    path = folder / "hosts.json"
    path.write_text(json.dumps([{"ssh": h.ssh, "ips": h.ips} for h in hosts]), encoding="utf-8")
    return path
