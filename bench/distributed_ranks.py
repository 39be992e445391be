"""Data-parallel throughput: one process against 2 local ranks (mlx.launch, ring backend on
127.0.0.1), the same global batch, model, data and steps, in one invocation.

    .venv/bin/python bench/distributed_ranks.py [--iters 30] [--batch-size 8] [--kind qwen2]

Each run is `python -m engine train ... --events -` (the 2-rank one with `--ranks 2`); the
figure is trained tokens per second over the steps after the first (the first compiles), from
the Step events' wall times, and the run's whole wall time; and the CPU seconds all its
processes used (getrusage of the reaped children: mlx.launch reaps its ranks), per 1000 trained
tokens, which a busy shared box disturbs less than wall time. Runs are interleaved (1, 2, 1, 2,
... for --repeats). Prints the load average before and after: on a shared CPU box the ranks
compete with each other and with everything else, so this says what the distributed path costs
here, not what two Macs over Thunderbolt would gain.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _toy(path: Path, n: int) -> Path:
    from tests.train.conftest import write_toy_chat

    return write_toy_chat(path, n=n)


def _run(model: Path, data: Path, home: Path, name: str, args, ranks: int) -> dict:
    cmd = [sys.executable, "-m", "engine", "train", "--model", str(model), "--data", str(data),
           "--name", name, "--iters", str(args.iters), "--batch-size", str(args.batch_size),
           "--dropout", "0", "--eval-every", "0", "--save-every", str(args.iters),
           "--report-every", "1", "--baseline-prompts", "0", "--quiet", "--events", "-"]
    if ranks > 1:
        cmd += ["--ranks", str(ranks)]
    tic, cpu0 = time.perf_counter(), _children_cpu()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, env={**os.environ, "TAILOR_HOME": str(home)})
    steps = []
    for line in proc.stdout:
        if line.startswith("{"):
            e = json.loads(line)
            if e["event"] == "step":
                steps.append((time.perf_counter(), e["trained_tokens"]))
    proc.wait()
    wall, cpu = time.perf_counter() - tic, _children_cpu() - cpu0
    (t0, k0), (t1, k1) = steps[0], steps[-1]
    return {"ranks": ranks, "rc": proc.returncode, "wall_s": wall,
            "tokens_per_s": (k1 - k0) / max(t1 - t0, 1e-9),
            "step_s": (t1 - t0) / max(1, len(steps) - 1),
            "cpu_s_per_ktok": 1000 * cpu / max(k1, 1), "cpu_s": cpu}


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--kind", default="qwen2")
    p.add_argument("--repeats", type=int, default=1, help="interleaved pairs (1 rank, 2 ranks)")
    args = p.parse_args()
    from engine.tiny_models import cached_tiny_model

    model = cached_tiny_model(args.kind)
    print("load before:", os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        data = _toy(Path(tmp) / "toy.jsonl", 64)
        rows = [_run(model, data, Path(tmp) / f"home{i}-{r}", f"r{r}", args, r)
                for i in range(args.repeats) for r in (1, 2)]
    print("load after:", os.getloadavg())
    for r in rows:
        print(f"{r['ranks']} rank(s): {r['tokens_per_s']:8.1f} trained tokens/s, "
              f"{r['step_s'] * 1000:7.1f} ms/step, wall {r['wall_s']:.1f} s, "
              f"{r['cpu_s_per_ktok']:.2f} CPU s per 1000 trained tokens (rc {r['rc']})")

    def median(ranks: int, key: str) -> float:
        return statistics.median(r[key] for r in rows if r["ranks"] == ranks)

    print(f"2 ranks / 1: {median(2, 'tokens_per_s') / median(1, 'tokens_per_s'):.2f}x "
          f"throughput, {median(2, 'cpu_s_per_ktok') / median(1, 'cpu_s_per_ktok'):.2f}x CPU "
          "per token (CPU backend, 2 shared cores, ranks on one machine: not a two-Mac figure)")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
