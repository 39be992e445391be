"""Playground latency: time from Send to the first token of the reply, for the second and later
messages, through the page's one long-lived `tailor generate --serve` worker against a new
`tailor generate` worker per message (the Playground before issue 14), on the same tiny model,
in one run.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/playground_latency.py [--messages 6]
        [--kind qwen2] [--max-tokens 8]

Persistent: the real PlaygroundPage, Send pressed (``page.send()``) until its column shows the
first streamed piece. Per message: what the page did before, a JobQueue job running
``commands.generate_command`` (its own process, imports and model load), from the submit to
the first streamed ``generate`` Progress piece. A throwaway run warms the file cache first; the
first message of each is the cold start (reported, not in the ratio). Prints each message's time, the medians and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def until(condition, timeout: float = 300.0) -> None:
    from PySide6.QtTest import QTest

    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the reply did not come")
        QTest.qWait(1)


def persistent(model: str, prompts: list[str], max_tokens: int) -> tuple[list[float], int]:
    """Send-to-first-token seconds per message through the page; and how many workers ran."""
    from app.pages.playground import PlaygroundPage
    from app.state import AppState

    state = AppState()
    state.set_model(model)
    page = PlaygroundPage(state)
    page.select_adapter("")
    page.max_tokens.setValue(max_tokens)
    times = []
    for prompt in prompts:
        page.prompt.setPlainText(prompt)
        start = time.perf_counter()
        page.send()  # (the column's piece count starts again at 0)
        until(lambda: page.left.pieces > 0 or not page.busy())
        times.append(time.perf_counter() - start)
        until(lambda: not page.busy())
        assert not page.left.turns[-1][1].endswith("]"), page.left.turns[-1][1]
    started = page.workers_started
    worker = page.worker
    page.shutdown()
    until(lambda: worker is None or not worker.running, 30)
    return times, started


def per_message(model: str, prompts: list[str], max_tokens: int) -> tuple[list[float], int]:
    """The same, with a new `tailor generate` worker per message (as the page used to)."""
    from app import commands
    from app.jobs import JobQueue

    queue = JobQueue()
    times = []
    for prompt in prompts:
        first: list[float] = []
        start = time.perf_counter()
        argv = commands.generate_command(model, prompt, max_tokens=max_tokens)
        job = queue.submit("Generate (base)", argv, heavy=False)
        job.worker.progressed.connect(
            lambda e: first or (e.stage == "generate" and e.message and
                                first.append(time.perf_counter())))
        until(lambda: job.done)
        assert job.state == "finished" and first, job.state
        times.append(first[0] - start)
    return times, len(queue.jobs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--messages", type=int, default=6)
    p.add_argument("--kind", default="qwen2", help="tiny model kind (engine/tiny_models.py)")
    p.add_argument("--max-tokens", type=int, default=8)
    a = p.parse_args()
    os.environ["TAILOR_HOME"] = tempfile.mkdtemp(prefix="tailor-bench-")
    from app.main import make_app
    from engine.tiny_models import cached_tiny_model

    make_app([])
    model = str(cached_tiny_model(a.kind))
    prompts = [f"Tell me about the river number {i}." for i in range(1, a.messages + 1)]
    # One throwaway run first, so neither side pays for a cold file cache (MLX, the model).
    per_message(model, prompts[:1], a.max_tokens)
    served, served_workers = persistent(model, prompts, a.max_tokens)
    fresh, fresh_workers = per_message(model, prompts, a.max_tokens)
    print(f"tiny model {a.kind} ({model}), {a.messages} messages, max {a.max_tokens} tokens")
    print(f"{'message':>8} {'persistent worker':>18} {'worker per message':>19}")
    for i, (s, f) in enumerate(zip(served, fresh), 1):
        note = "  (cold start: loads the model)" if i == 1 else ""
        print(f"{i:>8} {s * 1000:>15.1f} ms {f * 1000:>16.1f} ms{note}")
    s_med, f_med = statistics.median(served[1:]), statistics.median(fresh[1:])
    print(f"median of messages 2..{a.messages}: persistent {s_med * 1000:.1f} ms, "
          f"worker per message {f_med * 1000:.1f} ms: {f_med / s_med:.0f}x faster "
          f"({served_workers} worker process against {fresh_workers})")
    print(json.dumps({"kind": a.kind, "messages": a.messages, "max_tokens": a.max_tokens,
                      "persistent_s": served, "per_message_s": fresh,
                      "persistent_median_2_on_s": s_med, "per_message_median_2_on_s": f_med,
                      "ratio": f_med / s_med, "persistent_workers": served_workers,
                      "per_message_workers": fresh_workers}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
