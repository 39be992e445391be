"""`tailor --self-test`: is this installation whole? One line of verdict, exit 0 or 1.

Opens the main window offscreen and runs the tiny demo job (a few training steps, a GGUF export,
its llama.cpp verification where llama.cpp is installed) through a real engine worker process,
as the app runs every heavy job. Everything goes to a temporary library that is removed after,
so the user's own library and settings are never touched. The frozen app runs the same code
(`Tailor.app/Contents/MacOS/Tailor --self-test`).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SelfTestResult:
    passed: bool
    seconds: float
    checks: list[str] = field(default_factory=list)  # what was shown to work
    problem: str = ""

    def verdict(self) -> str:
        head = "PASSED" if self.passed else "FAILED"
        detail = "; ".join(self.checks) if self.passed else self.problem
        return f"Tailor self-test {head} in {self.seconds:.0f} s: {detail}"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tailor --self-test", description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=6, help="training steps of the demo job")
    p.add_argument("--quant", default="q8_0", help="GGUF type of the demo export")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds before giving up")
    p.add_argument("--keep", action="store_true", help="keep the temporary library (its path "
                                                       "is printed)")
    return p


def run_self_test(root: Path, iters: int = 6, quant: str = "q8_0",
                  timeout: float = 600.0) -> SelfTestResult:
    """The checks, with ``root`` as the temporary library; the caller removes it."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"  # before Qt starts: no display is needed
    os.environ["TAILOR_HOME"] = str(root / "library")  # the worker inherits both
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    checks: list[str] = []

    def failed(problem: str) -> SelfTestResult:
        return SelfTestResult(False, time.monotonic() - t0, checks, problem)

    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from engine.results import DemoResult, JobState

    from .commands import engine_argv
    from .main import make_app
    from .main_window import MainWindow
    from .worker import EngineWorker

    app = make_app([])
    settings = QSettings(str(root / "settings.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings, first_run_sample=False)
    window.show()
    app.processEvents()
    if not window.isVisible():
        return failed("the main window did not open")
    checks.append(f"window opened ({len(window.pages)} pages)")

    verify = importlib.util.find_spec("llama_cpp") is not None
    argv = engine_argv("demo", "--iters", str(iters), "--quant", quant,
                       "--out", str(root / "demo"), *([] if verify else ["--no-verify"]))
    worker = EngineWorker(argv, name="self-test")
    steps: list[object] = []
    worker.stepped.connect(steps.append)
    loop = QEventLoop()
    worker.ended.connect(lambda _state: loop.quit())
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(worker.stop)
    timer.start(int(timeout * 1000))
    worker.start()
    loop.exec()
    timer.stop()
    window.close()

    event = worker.final_event
    if worker.state != JobState.FINISHED:
        message = getattr(event, "message", "") or "; ".join(list(worker.stderr_tail)[-3:])
        hint = getattr(event, "hint", "")
        return failed(f"the demo job {worker.state} in its worker process: {message}"
                      + (f" (hint: {hint})" if hint else ""))
    result = getattr(event, "result", None)
    if not isinstance(result, DemoResult):
        return failed(f"the demo job's result is not a demo result ({type(result).__name__})")
    checks.append(f"demo job in a worker process: {len(steps)} training steps")
    if result.first_val_loss is not None and result.best_val_loss is not None:
        checks.append(f"validation loss {result.first_val_loss:.2f} -> "
                      f"{result.best_val_loss:.2f}")
    if not result.gguf or not Path(result.gguf).is_file():
        return failed(f"the demo job reported no GGUF file ({result.gguf!r})")
    if verify:
        if not result.verification.get("passed"):
            return failed(f"the {quant.upper()} GGUF failed its llama.cpp verification")
        checks.append(f"{quant.upper()} GGUF verified in llama.cpp")
    else:
        checks.append(f"{quant.upper()} GGUF written (llama.cpp not installed: not verified)")
    return SelfTestResult(True, time.monotonic() - t0, checks)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tailor-self-test-"))
    try:
        result = run_self_test(root, iters=args.iters, quant=args.quant, timeout=args.timeout)
    except Exception as e:  # noqa: BLE001 - the verdict line is the whole point of this command
        result = SelfTestResult(False, 0.0, problem=f"{type(e).__name__}: {e}")
    # A failure's evidence (the worker's error log, the run record) lives in the temporary
    # library, and the verdict may point into it: keep it then.
    if args.keep or not result.passed:
        print(f"tailor --self-test: the temporary library is kept in {root}", file=sys.stderr)
    else:
        shutil.rmtree(root, ignore_errors=True)
    print(result.verdict())
    return 0 if result.passed else 1
