"""Check (not CI): Tailor's `ties` merge, fused, against mergekit's `ties` on the same inputs.

mergekit merges whole models: it is given the base and the two adapters each fused into it
(`tailor fuse`), and takes their differences from the base as the task vectors. Tailor merges
the adapters' own changes (scale * B @ A) and adds the result to the base (`tailor merge
--fuse`). Both outputs are compared tensor by tensor: max |tailor - mergekit| / max |mergekit|.

mergekit pulls PyTorch, so it lives in its own virtualenv (not a Tailor dependency):

    python3 -m venv /work/venv-mergekit && /work/venv-mergekit/bin/pip install mergekit
    .venv/bin/python bench/merge_vs_mergekit.py [--mergekit-venv /work/venv-mergekit]
        [--kind llama3] [--density 0.5] [--weights 0.6,0.4]

Differences that remain are float32 rounding: mergekit's task vector is (W + dW) - W as
stored in the fused file, Tailor's is dW itself, so an entry within rounding of the trim
threshold can land on the other side of it.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


def tensors(folder: Path) -> dict:
    from safetensors.numpy import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mergekit-venv", default="/work/venv-mergekit")
    ap.add_argument("--kind", default="llama3", help="tiny fixture model (engine/tiny_models)")
    ap.add_argument("--density", type=float, default=0.5)
    ap.add_argument("--weights", default="0.6,0.4")
    ap.add_argument("--rank", type=int, default=8)
    a = ap.parse_args()
    mergekit_yaml = Path(a.mergekit_venv) / "bin" / "mergekit-yaml"
    if not mergekit_yaml.exists():
        print(f"mergekit is not installed in {a.mergekit_venv} (see this script's docstring)")
        return 2
    weights = [float(w) for w in a.weights.split(",")]
    with tempfile.TemporaryDirectory(prefix="tailor-vs-mergekit-") as tmp:
        tmp = Path(tmp)
        os.environ["TAILOR_HOME"] = str(tmp / "home")
        import numpy as np

        from engine.fuse import fuse_adapter
        from engine.merge import MergeConfig
        from engine.merge.run import merge_adapters
        from engine.tiny_models import cached_tiny_model
        from merge import write_adapter  # bench/merge.py

        base = cached_tiny_model(a.kind)
        import json

        n_layers = json.loads((base / "config.json").read_text())["num_hidden_layers"]
        for name, seed in (("one", 1), ("two", 2)):
            write_adapter(tmp / "home", name, base, n_layers, a.rank, seed)
            fuse_adapter(name, tmp / f"fused-{name}")
        cfg = MergeConfig(method="ties", weights=weights, density=a.density)
        merge_adapters(["one", "two"], cfg, "", tmp / "tailor")
        (tmp / "ties.yml").write_text(
            f"merge_method: ties\nbase_model: {base}\ndtype: float32\n"
            "parameters:\n  normalize: true\nmodels:\n"
            + "".join(f"  - model: {tmp / f'fused-{n}'}\n    parameters:\n"
                      f"      weight: {w}\n      density: {a.density}\n"
                      for n, w in zip(("one", "two"), weights)))
        proc = subprocess.run([str(mergekit_yaml), str(tmp / "ties.yml"), str(tmp / "mergekit"),
                               "--no-lazy-unpickle", "--allow-crimes"],
                              capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1",
                                   "CUDA_VISIBLE_DEVICES": ""})
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            return 1
        ours, theirs = tensors(tmp / "tailor"), tensors(tmp / "mergekit")
        base_t = tensors(base)
        print(f"{a.kind}: ties, weights {weights}, density {a.density}, rank-{a.rank} adapters "
              f"on every linear layer; {len(theirs)} tensors from mergekit, {len(ours)} from "
              "Tailor\n")
        worst = 0.0
        print(f"{'tensor':44} {'max|diff|/max|mk|':>18} {'of the change':>14} "
              f"{'changed by merge':>17}")
        worst_change = 0.0
        for key in sorted(theirs):
            if key not in ours:
                print(f"{key:44} missing in Tailor's output")
                worst = float("inf")
                continue
            t, m = ours[key].astype(np.float64), theirs[key].astype(np.float64)
            rel = float(np.max(np.abs(t - m)) / max(np.max(np.abs(m)), 1e-30))
            b = base_t.get(key, theirs[key]).astype(np.float64)
            moved = not np.array_equal(m, b)
            # the same difference against the size of the merged change alone (stricter)
            of_change = float(np.max(np.abs(t - m)) / max(np.max(np.abs(m - b)), 1e-30)) \
                if moved else 0.0
            worst, worst_change = max(worst, rel), max(worst_change, of_change)
            if moved or rel > 0:
                print(f"{key:44} {rel:18.2e} {of_change:14.2e} {'yes' if moved else 'no':>17}")
        extra = sorted(set(ours) - set(theirs))
        if extra:
            print(f"only in Tailor's output: {extra}")
        print(f"\nworst tensor: {worst:.2e} relative ({'within' if worst <= 1e-5 else 'OVER'} "
              f"1e-5); against the merged change alone: {worst_change:.2e}")
        return 0 if worst <= 1e-5 and not extra else 1


if __name__ == "__main__":
    sys.exit(main())
