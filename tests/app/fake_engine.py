"""A stand-in engine worker for GUI tests and the latency bench: replays recorded events.

    python fake_engine.py [--replay FILE.jsonl | --steps N] [--chunk BYTES] [--delay S]
                          [--then finish|wait-stop|ignore-stop|die|exit:CODE]

Writes the events as the real worker does (one JSON line each) but in chunks of --chunk bytes,
so records are split across pipe reads; --delay sleeps between records.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def step_events(n: int) -> list[dict]:
    out = [{"event": "started", "v": 1, "job": "train", "config": {"rank": 8},
            "info": {"trainable_parameters": 1234}}]
    for i in range(1, n + 1):
        out.append({"event": "step", "v": 1, "job": "train", "iteration": i,
                    "total_iterations": n, "epoch": i / n, "train_loss": 3.0 / (1 + 0.01 * i),
                    "learning_rate": 1e-4, "tokens_per_second": 5000.0, "trained_tokens": 64 * i,
                    "peak_memory_gb": 0.5, "eta_seconds": float(n - i), "time": time.time()})
        if i % 50 == 0:
            out.append({"event": "validation", "v": 1, "job": "train", "iteration": i,
                        "val_loss": 3.2 / (1 + 0.01 * i), "best_val_loss": 3.2 / (1 + 0.01 * i),
                        "is_best": True})
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--replay")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--chunk", type=int, default=0)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--then", default="finish")
    a = p.parse_args()
    if a.replay:
        with open(a.replay, encoding="utf-8") as f:
            events = [json.loads(l) for l in f if l.strip()]
    else:
        events = step_events(a.steps)
    out = sys.stdout.buffer
    for e in events:
        data = (json.dumps(e) + "\n").encode()
        if a.chunk:
            for i in range(0, len(data), a.chunk):
                out.write(data[i:i + a.chunk])
                out.flush()
        else:
            out.write(data)
        if a.delay:
            out.flush()
            time.sleep(a.delay)
    out.flush()

    def emit(obj: dict) -> None:
        out.write((json.dumps(obj) + "\n").encode())
        out.flush()

    if a.then == "finish":
        emit({"event": "finished", "v": 1, "job": "train", "result": {"adapter": "fake"}})
        return 0
    if a.then == "wait-stop":
        emit({"event": "checkpoint", "v": 1, "job": "train", "iteration": len(events),
              "path": "/tmp/ckpt"})
        for line in sys.stdin:
            if line.strip() == "stop":
                emit({"event": "cancelled", "v": 1, "job": "train", "message": "stopped",
                      "checkpoint": "/tmp/ckpt"})
                return 130
        return 3
    if a.then == "ignore-stop":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        time.sleep(600)
        return 0
    if a.then == "die":
        sys.stderr.write("Traceback (most recent call last):\nMemoryError: simulated\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if a.then.startswith("exit:"):
        return int(a.then.split(":", 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
