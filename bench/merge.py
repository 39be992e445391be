"""Benchmark: `tailor merge` time and peak memory on a model with the shapes of Qwen2.5-0.5B
(bench/export.py's random F16 model: hidden 896, 24 layers, FFN 4864, vocab 151936) and two
rank-16 adapters on every linear layer (random factors, as a trained adapter's shapes).

Each method runs in a fresh child process; wall time and peak RSS come from getrusage in the
child (on Linux its peak is reset after the imports, which alone go higher than a small
merge), whose RSS after its imports (before the merge reads anything) is the constant taken
off. The goal (issue 20): peak memory beyond the adapters themselves (the two parents and the
result, in float32) under 1.5 x the largest weight matrix. Both yardsticks are printed: the
largest matrix of the model (the embedding) and the largest adapted one (gate/up/down).

    .venv/bin/python bench/merge.py               # full size, every method, then --fuse
    .venv/bin/python bench/merge.py --layers 4    # quicker
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

KEYS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def write_adapter(home: Path, name: str, model: Path, layers: int, rank: int, seed: int) -> int:
    """A rank-``rank`` LoRA adapter on every linear layer, as a library entry; -> its bytes."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine.library import write_manifest
    from engine.models import model_fingerprint

    cfg = json.loads((model / "config.json").read_text())
    h, f = cfg["hidden_size"], cfg["intermediate_size"]
    kv = cfg["num_key_value_heads"] * h // cfg["num_attention_heads"]
    dims = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv),
            "self_attn.v_proj": (h, kv), "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, f),
            "mlp.up_proj": (h, f), "mlp.down_proj": (f, h)}
    rng = np.random.default_rng(seed)
    weights = {}
    for i in range(layers):
        for key, (d_in, d_out) in dims.items():
            p = f"model.layers.{i}.{key}"
            weights[p + ".lora_a"] = rng.standard_normal((d_in, rank), np.float32) / d_in ** .5
            weights[p + ".lora_b"] = rng.standard_normal((rank, d_out), np.float32) * 0.01
    folder = home / "adapters" / name
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "adapters.safetensors"), metadata={"format": "mlx"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "fine_tune_type": "lora", "num_layers": layers, "model": str(model),
        "lora_parameters": {"rank": rank, "scale": 2.0, "dropout": 0.0, "keys": KEYS}}))
    write_manifest(folder, {"name": name, "status": "finished",
                            "base_model": {"path": str(model), "given": str(model),
                                           "sha256": model_fingerprint(model),
                                           "architecture": "qwen2"}})
    return sum(v.nbytes for v in weights.values())


def _rss(field: str) -> int | None:
    """VmRSS / VmHWM of this process in bytes (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux: ``5`` to clear_refs), so the peak measured is the
    merge's, not the imports' (which go higher than a small merge)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(home: str, method: str, out: str, rank: int, q) -> None:
    import resource

    os.environ["TAILOR_HOME"] = home
    import mlx.core as mx  # noqa: F401 - imports are the constant
    import mlx_lm  # noqa: F401
    import numpy  # noqa: F401

    from engine.merge import MergeConfig
    from engine.merge.run import merge_adapters

    reset = _reset_peak()
    base_rss = _rss("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = ru.ru_utime + ru.ru_stime
    t0 = time.perf_counter()
    cfg = MergeConfig(method=method, weights=[0.6, 0.4], rank=rank, density=0.5)
    result = merge_adapters(["one", "two"], cfg, "" if out else f"merged-{method}",
                            out or None)
    wall = time.perf_counter() - t0
    peak = _rss("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ru = resource.getrusage(resource.RUSAGE_SELF)
    q.put({"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime - cpu0, "peak_rss": peak, "base_rss": base_rss,
           "min_energy_kept": result.min_energy_kept, "rank": result.rank,
           "exact": result.exact})


def run_step(home: Path, method: str, out: str = "", rank: int = 16) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(home), method, out, rank, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"{method} failed (exit {p.exitcode})")
    return q.get()


def main() -> None:
    from export import QWEN05, write_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=QWEN05["num_hidden_layers"])
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--no-fuse", action="store_true", help="skip the --fuse run")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tailor-merge-bench-") as tmp:
        tmp = Path(tmp)
        print(f"writing a Qwen2.5-0.5B-shaped model ({a.layers} layers, random F16)...")
        params, largest = write_model(tmp / "model", a.layers)
        h, f = QWEN05["hidden_size"], QWEN05["intermediate_size"]
        largest_adapted = h * f * 2  # F16 gate/up/down
        home = tmp / "home"
        sizes = [write_adapter(home, n, tmp / "model", a.layers, a.rank, s)
                 for n, s in (("one", 1), ("two", 2))]
        print(f"model: {params / 1e6:.0f}M parameters; largest matrix (embedding) "
              f"{largest / 1e6:.0f} MB, largest adapted matrix {largest_adapted / 1e6:.1f} MB "
              f"(F16); two rank-{a.rank} adapters of {sizes[0] / 1e6:.1f} MB each (float32)\n")
        steps = [("concat", ""), ("linear", ""), ("ties", ""), ("dare", "")]
        if not a.no_fuse:
            steps.append(("ties", str(tmp / "fused")))
        print(f"{'method':14} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} {'beyond adapters MB':>19} "
              f"{'x largest':>10} {'x largest adapted':>18}  energy kept (worst layer)")
        for method, out in steps:
            r = run_step(home, method, out, a.rank)
            grown = r["peak_rss"] - r["base_rss"]
            result_bytes = sizes[0] * r["rank"] // a.rank if not out else 0
            beyond = grown - sum(sizes) - result_bytes
            label = method + (" --fuse" if out else "")
            energy = "exact" if r["exact"] else f"{100 * r['min_energy_kept']:.2f}%"
            print(f"{label:14} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {grown / 1e6:8.0f} {beyond / 1e6:19.0f} "
                  f"{beyond / largest:10.2f} {beyond / largest_adapted:18.2f}  {energy}")
        if not a.no_fuse:
            print("\n(--fuse loads the whole base and writes it: its peak includes the model, "
                  f"{params * 2 / 1e6:.0f} MB in F16)")


if __name__ == "__main__":
    main()
