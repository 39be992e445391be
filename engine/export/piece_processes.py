"""Encoding worker processes for the GGUF writer.

numpy's encoders make many short calls, and Python's GIL is held between them, so encoding
threads of one process wait on each other: a Q2_K export of a 0.4B llama took 4.3 s CPU and
2.9 s wall in 2 threads, 3.1 s and 2.8 s in one, on 2 cores. Processes do not share a GIL:
each worker (piece_worker.py, started as ``python -m engine.export.piece_worker``) reads its
piece from the checkpoint, encodes it and writes the bytes at the piece's offset in the
output file, so only small task tuples cross between processes. A worker imports numpy and
the encoders alone (~0.2 s CPU to start), so the writer uses them for large exports only
(PROCESS_MIN_VALUES) and keeps its threads for small ones.
"""
from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Values to encode from which worker processes pay off (their start-up: ~0.2 s CPU each)
PROCESS_MIN_VALUES = 1 << 26
WORKER_MODULE = "engine.export.piece_worker"


def worker_argv() -> list[str]:
    """The command of one worker: this interpreter, or the frozen app's binary, which routes
    ``-m engine.export.piece_worker`` to the worker (packaging/entry.py)."""
    return [sys.executable, "-m", WORKER_MODULE]


def _worker_env() -> dict:
    env = dict(os.environ)
    # one thread each: the workers are the parallelism (an OpenBLAS pool spinning up costs
    # ~0.1 s CPU per process and no encoder calls BLAS)
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = str(Path(__file__).resolve().parents[2])  # the folder holding `engine`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


class WorkerFailed(Exception):
    """A worker's answer other than the bytes written: ``reply`` is its message tuple."""

    def __init__(self, reply: tuple):
        super().__init__(reply)
        self.reply = reply


@dataclass
class _Worker:
    proc: subprocess.Popen
    stderr: object  # a temporary file: the worker's own output, read only if it dies

    def ask(self, task) -> tuple:
        try:
            pickle.dump(task, self.proc.stdin)
            self.proc.stdin.flush()
            return pickle.load(self.proc.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            return ("died", self.proc.wait(), self._last_words())

    def _last_words(self) -> str:
        try:
            self.stderr.seek(0)
            lines = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""


@dataclass
class WorkerProcesses:
    """``n`` worker processes writing pieces into files; ``run`` is called from any number
    of threads (each call takes an idle worker for its piece). ``peaks``: after close, each
    worker's (peak RSS, RSS after its start-up) in bytes."""

    n: int
    idle: queue.Queue = field(default_factory=queue.Queue)
    workers: list = field(default_factory=list)
    peaks: list = field(default_factory=list)

    def __post_init__(self):
        if not sys.executable:
            raise OSError("no Python interpreter to start worker processes with")
        env = _worker_env()
        for _ in range(self.n):
            err = tempfile.TemporaryFile()
            try:
                proc = subprocess.Popen(worker_argv(), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=err, env=env)
            except OSError:
                err.close()
                self.close()  # the ones already started
                raise
            self.workers.append(_Worker(proc, err))
            self.idle.put(self.workers[-1])

    def run(self, job, path: str, offset: int) -> int:
        """Encode ``job`` (pieces.PieceJob) into ``path`` at ``offset`` -> bytes written;
        WorkerFailed for any other answer."""
        worker = self.idle.get()
        try:
            reply = worker.ask((job, path, offset))
        finally:
            self.idle.put(worker)
        if reply[0] != "ok":
            raise WorkerFailed(reply)
        return reply[1]

    def close(self) -> None:
        """Stop every worker (after its running piece) and wait for it."""
        for w in self.workers:
            reply = w.ask(None) if w.proc.poll() is None else ("died",)
            if reply[0] == "bye":
                self.peaks.append(reply[1:])
            for f in (w.proc.stdin, w.proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - a hung worker
                w.proc.kill()
                w.proc.wait()
            w.stderr.close()
        self.workers.clear()
