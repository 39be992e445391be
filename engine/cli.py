"""`tailor <command> ...`: the engine's command line (`tailor` alone: see app/launcher.py).

Each command lives in its own module exposing ``configure(parser)`` and ``run(args, job)``;
this file only dispatches (modules are imported lazily, so `tailor --help` stays fast).
Exit status: 0 success, 1 a failure the user can act on, 2 usage, 130 cancelled.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Callable

from .atomic import translate_write_faults, write_fault
from .cli_options import _add_common, add_action  # noqa: F401 - (add_action: commands' import)
from .events import (Cancelled, CancelledEvent, ErrorCode, Failed, Job, JsonLinesReporter, Log,
                     Reporter, TailorError, TerminalReporter, fan_out)

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("engine.data.cli", "check and preview a dataset"),
    "train": ("engine.train.cli", "train a LoRA/DoRA adapter (or full fine-tune)"),
    "eval": ("engine.evaluate.cli", "score an adapter against its base on held-out examples"),
    "library": ("engine.library_cli", "list, show, rename, delete adapters in the library"),
    "generate": ("engine.generate", "try a model or adapter with a prompt (streamed)"),
    "fuse": ("engine.fuse", "merge an adapter into its base model (Hugging Face folder)"),
    "merge": ("engine.merge.cli", "combine adapters of one base into a new adapter or model"),
    "export": ("engine.export.cli", "write a GGUF file (and verify it in llama.cpp)"),
    "lmstudio": ("engine.lmstudio", "put a GGUF in LM Studio's models folder (hard link or copy)"),
    "push": ("engine.hub.cli", "publish an adapter to the Hugging Face Hub, with a model card"),
    "ollama": ("engine.ollama.cli", "hand a GGUF or adapter to Ollama, or write a Modelfile folder"),
    "model": ("engine.models.cli", "inspect or download a base model"),
    "demo": ("engine.demo", "run the built-in demo end to end: train, export, verify, Modelfile"),
    "hosts": ("engine.train.hosts_cli", "check the Macs of a distributed run over ssh (--hosts)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tailor", description=__doc__.splitlines()[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"tailor {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _add_common(p)
        p.set_defaults(_module=module)
        # Modules configure lazily; argparse needs the options up front, so import here only
        # for the command actually asked for (keeps `tailor --help` fast).
        if len(sys.argv) > 1 and sys.argv[1] == name or os.environ.get("TAILOR_FULL_HELP"):
            importlib.import_module(module).configure(p)
    return parser


class _EventsFile:
    """``--events FILE``: a write that fails (full disk...) is a WriteFailed naming the file;
    after it the file is left alone, so the failure itself still reaches the terminal."""

    def __init__(self, stream, path: str):
        self.reporter = JsonLinesReporter(stream)
        self.path = path
        self.broken = False

    def __call__(self, event) -> None:
        if self.broken:
            return
        try:
            self.reporter(event)
        except OSError as e:
            self.broken = True
            raise (write_fault(e, self.path) or TailorError(
                f"cannot write the events file {self.path}: {e}")) from e
        except BaseException:
            self.broken = True  # interrupted mid-line: the file's last line is partial
            raise


def make_job(name: str, events: str | None, quiet: bool) -> tuple[Job, Callable[[], None]]:
    reporters: list[Reporter] = []
    closers: list[Callable[[], None]] = []
    if events == "-":
        reporters.append(JsonLinesReporter(sys.stdout))
    elif events:
        with translate_write_faults(events):
            f = open(events, "a", encoding="utf-8")
        reporters.append(_EventsFile(f, events))
        closers.append(f.close)
    reporters.append(TerminalReporter(sys.stderr, errors_only=quiet))
    job = Job(name=name, report=fan_out(*reporters))

    def close() -> None:
        for c in closers:
            with contextlib.suppress(OSError):  # each event was flushed when written
                c()

    return job, close


# Commands that read one library adapter (--adapter) for their whole run: its lock keeps a
# training run, rename or delete from changing it under them (the domain functions inside take
# the same lock re-entrantly, engine/locks.py). eval writes only its report, in the adapter's
# evaluations/ folder; push stages copies outside it.
READS_ADAPTER = ("fuse", "export", "ollama", "eval", "push")


def job_adapters(args: argparse.Namespace) -> list[str]:
    """The library adapters the runner locks for this command: the one a reader reads; a
    merge's parents and, without --fuse, the new adapter it writes. Bad names are left out
    (the command itself says why)."""
    from .library import validate_name

    command = getattr(args, "command", None)
    names: list[str] = []
    if command in READS_ADAPTER and getattr(args, "adapter", None):
        names.append(args.adapter)
    if command == "merge":
        names += list(getattr(args, "adapters", None) or [])
        if getattr(args, "name", "") and not getattr(args, "fuse", None):
            names.append(args.name)
    valid = []
    for name in names:
        with contextlib.suppress(TailorError):
            valid.append(validate_name(name))
    return list(dict.fromkeys(valid))


def job_locks(args: argparse.Namespace, job_name: str):
    """The locks a command holds for its whole run (engine/locks.py): its adapters (exclusive:
    training replaces the weights a reader reads; merge writes its new name) and its output
    path; `tailor lmstudio` the GGUF it places (one placement of a file at a time, so "already
    there" is decided once). Training and library changes lock inside engine/train/run.py and
    engine/library.py."""
    from . import locks

    wanted: list = [locks.adapter_lock(name, job_name) for name in job_adapters(args)]
    out = job_output(args)
    if getattr(args, "command", None) == "lmstudio" and getattr(args, "gguf", None):
        out = args.gguf
    if out:
        wanted.append(locks.output_lock(out, job_name))
    return locks.holding(*wanted)


def job_output(args: argparse.Namespace) -> str | None:
    """The file or folder a command writes outside the library (None for the others): fuse's
    and export's --out, the Ollama hand-off's Modelfile folder, merge's --fuse folder, eval's
    --markdown report."""
    command = getattr(args, "command", None)
    if command in ("fuse", "export"):
        return getattr(args, "out", None)
    if command == "ollama":
        return getattr(args, "modelfile_dir", None)
    if command == "merge":
        return getattr(args, "fuse", None)
    if command == "eval":
        return getattr(args, "markdown", None)
    return None


# commands that write: their start sweeps what killed jobs left (engine/sweep.py), in the
# library, beside their output, and in the folders of the adapters they hold locked (there any
# temporary is a dead job's, whatever its age: a killed eval's report, a killed merge's folder)
SWEEPING = {"train", "fuse", "export", "ollama", "demo", "merge", "eval", "push", "lmstudio",
            "library rename", "library delete", "library duplicate"}


def sweep_leftovers(args: argparse.Namespace, job: Job) -> None:
    """Remove stale temporaries of killed jobs in the library and next to this job's output,
    and say so; never fails the job."""
    from . import paths, sweep

    command = getattr(args, "command", None)
    if command not in SWEEPING and f"{command} {getattr(args, 'action', '')}" not in SWEEPING:
        return
    try:
        removed = sweep.sweep_library()
        for name in job_adapters(args):  # (locked by job_locks around this call)
            removed += sweep.sweep_adapter_folder(paths.adapters_dir() / name, held=True)
        out = job_output(args)
        if out:
            removed += sweep.sweep_output_folder(out, held=True)
    except Exception as e:  # noqa: BLE001 - tidying up must not stop the job
        job.report(Log(job=job.name, level="debug", message=f"sweep skipped: {e}"))
        return
    sweep.report_removed(removed, job.report, job.name)


def run_command(module_name: str, args: argparse.Namespace, job: Job) -> int:
    """Run one command; every way it can end becomes an exit status and one event, never a
    traceback on the terminal (an unexpected exception's traceback goes to a log file)."""
    try:
        from .stdio import temp_folder_problem

        problem = temp_folder_problem()  # before MLX fails on it mid-job (engine/stdio.py)
        if problem:
            raise TailorError(*problem)
        module = importlib.import_module(module_name)
        with job_locks(args, job.name):
            sweep_leftovers(args, job)
            result = module.run(args, job)
        return int(result or 0)
    except Cancelled as e:
        job.report(CancelledEvent(job=job.name, message=str(e) or "stopped",
                                  checkpoint=getattr(e, "checkpoint", "") or ""))
        return 130
    except KeyboardInterrupt:
        # A second Ctrl-C (the first asks politely): stop now, and ignore a third one while
        # the message goes out.
        with contextlib.suppress(ValueError):  # (not the main thread: no handler to change)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        job.report(CancelledEvent(job=job.name, message="interrupted (second Ctrl-C); "
                                                        "stopped at once"))
        return 130
    except TailorError as e:
        job.report(Failed(job=job.name, message=e.message, hint=e.hint,
                          error_type=type(e).__name__, code=e.code))
        return 1
    except MemoryError:
        job.report(Failed(job=job.name, message="out of memory",
                          hint="use a smaller batch or sequence length, gradient checkpointing, "
                               "or a 4-bit base", error_type="MemoryError",
                          code=ErrorCode.OUT_OF_MEMORY))
        return 1
    except OSError as e:
        # A write site that does not translate its faults itself (engine/atomic.py does).
        fault = write_fault(e, e.filename or "the output", action="write")
        if fault is None:
            return internal_error(job, e)
        job.report(Failed(job=job.name, message=fault.message, hint=fault.hint,
                          error_type=type(fault).__name__, code=fault.code))
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence
        return internal_error(job, e)


def write_error_log(exc: BaseException, job_name: str) -> Path:
    """Write ``exc``'s traceback, the command line and versions to
    ``<TAILOR_HOME>/logs/internal-error-<time>-<pid>.log``; return the file."""
    import time
    import traceback

    from . import __version__, paths

    folder = paths.tailor_home() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"internal-error-{stamp}-{os.getpid()}.log"
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"tailor {__version__}, python {sys.version.split()[0]}, {sys.platform}\n"
                f"job: {job_name}\ncommand: {' '.join(sys.argv)}\n\n")
        f.write("".join(traceback.format_exception(exc)))
    return path


def internal_error(job: Job, exc: BaseException) -> int:
    """An exception no code path expected: a one-line message, the traceback in a log file."""
    if os.environ.get("TAILOR_DEBUG"):
        raise exc
    first = (str(exc).strip().splitlines() or [""])[0]
    message = f"internal error: {type(exc).__name__}: {first[:300]}".rstrip(": ")
    try:
        log = write_error_log(exc, job.name)
        hint = f"this is a bug in Tailor; please report it with the log {log}"
    except Exception as e:  # noqa: BLE001 - e.g. the disk is full
        hint = (f"this is a bug in Tailor; please report it (the traceback could not be saved: "
                f"{e}; run with TAILOR_DEBUG=1 to see it)")
    job.report(Failed(job=job.name, message=message, hint=hint, error_type="InternalError",
                      code=ErrorCode.INTERNAL))
    return 1


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the job's handler is in place (imports)
        print("[tailor] cancelled.", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        sys.argv = [sys.argv[0], *argv]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from . import locks

    locks.CURRENT_COMMAND = shlex.join(["tailor", *argv])  # named by a refused second job
    try:
        job, close = make_job(args.command, args.events, args.quiet)
    except TailorError as e:
        print(f"[{args.command}] FAILED: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"[{args.command}] FAILED: cannot open the events file {args.events}: "
              f"{e.strerror or e}", file=sys.stderr)
        return 1
    # First Ctrl-C asks politely (the job checkpoints and exits); a second one kills.
    def on_sigint(signum, frame):
        if job.cancel.requested:
            raise KeyboardInterrupt
        job.cancel.cancel("interrupted (Ctrl-C)")

    signal.signal(signal.SIGINT, on_sigint)
    if args.events == "-" and not sys.stdin.isatty():
        job.cancel.watch_stdin()
    try:
        return run_command(args._module, args, job)
    except KeyboardInterrupt:  # a Ctrl-C while the last message went out
        return 130
    finally:
        close()


if __name__ == "__main__":
    sys.exit(main())
