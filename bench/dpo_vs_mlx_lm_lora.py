"""Tailor's DPO against mlx-lm-lora's (``train_dpo``) on the same model, data, initial adapter
and settings, one epoch each, in one invocation.

    .venv/bin/python bench/dpo_vs_mlx_lm_lora.py [--peer-python /work/venv-mlxlora/bin/python]
                                                 [--pairs 96] [--keep DIR]

mlx-lm-lora lives in its own virtualenv (``python -m venv V && V/bin/pip install mlx-lm-lora
"mlx[cpu]"``; it pins its own mlx-lm). Both sides get the very same token ids: the pairs are
rendered and tokenized once by Tailor's data pipeline (chat template, answer-only mask) and
handed to mlx-lm-lora as its tokenized dataset records (``chosen``/``rejected`` ids with
``*_prompt_length``), each side cut after its last trained token so the two masks are equal.
Both start from the same LoRA weights (written once, loaded by each), and train with AdamW at a
constant learning rate, no weight decay, no clipping, no dropout, beta 0.1, the same rank, scale
and layers, batch 4, one epoch (pairs / 4 steps). mlx-lm-lora's own data order (length-
sorted batches, one drawn at random each step) is replaced by Tailor's batch sequence, each
batch still padded and scored by mlx-lm-lora's own code, so both train on the same pairs at
every step; its reference model is its default, a second copy of the base
(``load_reference_model``), run on every step; Tailor's is the same weights with the adapter
switched off, computed once for every pair before step 1 (included in Tailor's time, and also
reported on its own as ``reference_seconds``). ``--epochs N`` trains N epochs on both sides.

Each trainer runs in its own process; it reports the training loop's wall and CPU time
(process time), MLX's peak memory and the process's peak resident memory (ru_maxrss);
``--rounds N`` runs each side N times, interleaved, and reports the median-CPU run. The final
loss of both adapters is measured by one evaluator (Tailor's DPO loss on the held-out pairs,
reference = base), so it compares like for like. On CPU mlx-lm-lora's
``mx.set_wired_limit(mx.device_info()["max_recommended_working_set_size"])`` raises KeyError
(no such key off Metal): the peer's process is given that key (0), which changes nothing else.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SETTINGS = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "learning_rate": 2e-5, "batch_size": 4,
            "beta": 0.1, "seed": 0, "max_seq_length": 512}
MODEL = {"hidden_size": 192, "num_hidden_layers": 4, "intermediate_size": 512,
         "num_attention_heads": 4}
WORDS = ("river mountain stone light garden window story letter market music morning "
         "evening bridge forest harbor island candle paper silver winter summer").split()

TAILOR_CHILD = r'''
import json, resource, sys, time
import mlx.core as mx
from engine.models import load_model
from engine.train.adapters import apply_adapters, trainable_weights
from engine.train.config import make_config
from engine.train.preference import PreferenceTrainer
from engine.data.preference import PreferencePair
from engine.data.prepare import TokenizedExample
job = json.load(open(sys.argv[1]))
net, _, _ = load_model(job["model"])
cfg = make_config(**job["config"])
apply_adapters(net, cfg)
net.load_weights(job["init"], strict=False)
def pair(r):
    def side(t, n):
        return TokenizedExample(t, [0] * n + [1] * (len(t) - n), "b:1")
    return PreferencePair(side(r["chosen"], r["chosen_prompt_length"]),
                          side(r["rejected"], r["rejected_prompt_length"]), "b:1")
train = [pair(r) for r in json.load(open(job["train"]))]
mx.reset_peak_memory()
marks = {}
def report(event):  # when the reference pre-pass reported its last batch
    if getattr(event, "stage", "") == "reference":
        marks["reference"] = time.perf_counter()
trainer = PreferenceTrainer(net, cfg, train, [], adapter_dir=__import__("pathlib").Path(job["out"]),
                            run_state={}, report=report)
tic, cpu = time.perf_counter(), time.process_time()
trainer.run()
seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
mx.save_safetensors(job["out"] + "/final.safetensors", dict(trainable_weights(net)))
last = trainer.history.metrics["train"][-1][1]["loss"]
print("BENCH", json.dumps({"seconds": seconds, "cpu_seconds": cpu, "mlx_peak": mx.get_peak_memory(),
      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "last_loss": last,
      "steps": trainer.step, "reference_seconds": marks.get("reference", tic) - tic}),
      flush=True)
'''

PEER_CHILD = r'''
import json, resource, sys, time
import mlx.core as mx
_info = mx.device_info
mx.device_info = lambda: {**_info(), "max_recommended_working_set_size":
                          _info().get("max_recommended_working_set_size", 0)}
import mlx.optimizers as optim
from mlx.utils import tree_flatten
from mlx_lm import load
from mlx_lm.tuner.utils import linear_to_lora_layers
from mlx_lm_lora.trainer.dpo_trainer import DPOTrainingArgs, train_dpo
from mlx_lm_lora.train import load_reference_model
job = json.load(open(sys.argv[1]))
model, _ = load(job["model"])
model.freeze()
linear_to_lora_layers(model, job["num_layers"], job["lora_parameters"])
model.load_weights(job["init"], strict=False)
class A: reference_model_path = None; model = job["model"]
ref = load_reference_model(A)
train = json.load(open(job["train"]))
import mlx_lm_lora.trainer.dpo_trainer as D
_own_batches, _order = D.iterate_dpo_batches, iter(job["order"])
def same_batches(dataset, batch_size, max_seq_length, train=False):
    # step k trains Tailor's batch k, padded and scored by mlx-lm-lora's own code
    if not train:
        yield from _own_batches(dataset, batch_size, max_seq_length, train)
        return
    yield from _own_batches([dataset[j] for j in next(_order)], batch_size, max_seq_length)
D.iterate_dpo_batches = same_batches
c = job["config"]
args = DPOTrainingArgs(batch_size=c["batch_size"], iters=job["steps"], val_batches=0,
                       steps_per_report=1, steps_per_eval=10**9,
                       steps_per_save=10**9, max_seq_length=c["max_seq_length"],
                       adapter_file=job["out"] + "/peer.safetensors", beta=c["beta"])
opt = optim.AdamW(learning_rate=c["learning_rate"], weight_decay=0.0)
last = {}
class CB:
    def on_train_loss_report(self, info): last.update(info)
    def on_val_loss_report(self, info): pass
mx.reset_peak_memory()
tic, cpu = time.perf_counter(), time.process_time()
train_dpo(model, ref, opt, train, None, args=args, training_callback=CB())
seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
mx.save_safetensors(job["out"] + "/final.safetensors",
                    dict(tree_flatten(model.trainable_parameters())))
print("BENCH", json.dumps({"seconds": seconds, "cpu_seconds": cpu, "mlx_peak": mx.get_peak_memory(),
      "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "last_loss": last.get("train_loss"), "steps": job["steps"]}), flush=True)
'''


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def write_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """Prompts of ~8-30 words; chosen answers calm and long-ish, rejected ones curt."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            prompt = f"Question {i}: " + _sentence(rng, rng.randint(8, 30))
            chosen = "Gladly. " + _sentence(rng, rng.randint(10, 40))
            rejected = "No. " + _sentence(rng, rng.randint(3, 12))
            f.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected})
                    + "\n")
    return path


def _records(pairs) -> list[dict]:
    """mlx-lm-lora's tokenized DPO records, each side cut after its last trained token."""
    out = []
    for p in pairs:
        rec = {}
        for side in ("chosen", "rejected"):
            ex = getattr(p, side)
            last = max(i for i, m in enumerate(ex.loss_mask) if m)
            rec[side] = list(ex.tokens[:last + 1])
            rec[f"{side}_prompt_length"] = ex.loss_mask.index(1)
            assert all(ex.loss_mask[rec[f"{side}_prompt_length"]:last + 1])
        out.append(rec)
    return out


def _run(python: str, code: str, job: dict, folder: Path) -> dict:
    spec = folder / "job.json"
    spec.write_text(json.dumps(job))
    tic = time.perf_counter()
    out = subprocess.run([python, "-c", code, str(spec)], cwd=REPO, capture_output=True,
                         text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{python} failed:\n{out.stderr[-4000:]}")
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH "))
    return {**json.loads(line[6:]), "process_seconds": time.perf_counter() - tic}


def _losses(model_dir: Path, cfg_kw: dict, adapters: dict, sets: dict) -> dict:
    """Tailor's DPO loss (reference: the base) of each final adapter on each set of pairs."""
    import mlx.core as mx
    import numpy as np

    from engine.models import load_model
    from engine.train.adapters import apply_adapters
    from engine.train.config import make_config
    from engine.train.preference import PairStream, make_preference_loss, SUMS, summarize

    cfg = make_config(**cfg_kw)
    net, _, _ = load_model(model_dir)
    apply_adapters(net, cfg)
    loss = make_preference_loss(net, cfg)
    out = {}
    for name, file in adapters.items():
        net.load_weights(str(file), strict=False)
        net.eval()
        for set_name, pairs in sets.items():
            total = np.zeros(len(SUMS))
            for b in PairStream(pairs, 4, cfg.max_seq_length, 0).all_in_order():
                total += np.array(loss(net, b.inputs, b.targets, b.index, b.weight,
                                       b.segments)[1])
            out[(name, set_name)] = summarize(total)
        mx.clear_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peer-python", default="/work/venv-mlxlora/bin/python")
    ap.add_argument("--pairs", type=int, default=96, help="training pairs (a multiple of 4)")
    ap.add_argument("--learning-rate", type=float, default=SETTINGS["learning_rate"],
                    help="small enough that one epoch leaves a loss to compare")
    ap.add_argument("--peer-first", action="store_true",
                    help="run mlx-lm-lora first (on a loaded machine the order matters)")
    ap.add_argument("--keep", help="keep the work folder here")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs per side, interleaved (the median CPU time's run is reported)")
    ap.add_argument("--epochs", type=int, default=1,
                    help="epochs on both sides (Tailor's reference pre-pass runs once)")
    a = ap.parse_args()
    SETTINGS["learning_rate"] = a.learning_rate
    from engine.data import DataConfig, prepare_dataset
    from engine.models.tokenizer import load_tokenizer
    from engine.tiny_models import cached_tiny_model
    from engine.train.adapters import apply_adapters, trainable_weights
    from engine.train.config import make_config
    from engine.models import load_model
    import mlx.core as mx

    work = Path(a.keep or tempfile.mkdtemp(prefix="dpo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = cached_tiny_model("qwen2", **MODEL)
    held = max(4, a.pairs // 4)
    data = write_pairs(work / "pairs.jsonl", a.pairs + held + 4)
    prepared = prepare_dataset(data, load_tokenizer(model_dir),
                               DataConfig(valid_fraction=held / (a.pairs + held + 4),
                                          dedupe=False))
    train, valid = prepared.train[:a.pairs], prepared.valid[:held]
    (work / "train.json").write_text(json.dumps(_records(train)))
    steps = a.epochs * len(train) // SETTINGS["batch_size"]
    cfg_kw = dict(SETTINGS, objective="dpo", iters=steps, schedule="constant", warmup=0.0,
                  grad_clip=0.0,
                  weight_decay=0.0, eval_every=0, save_every=10**6, baseline_prompts=0,
                  targets="all-linear")
    cfg = make_config(**cfg_kw)
    net, _, _ = load_model(model_dir)
    mx.random.seed(cfg.seed)
    adapter_config = apply_adapters(net, cfg)
    init = work / "init.safetensors"
    mx.save_safetensors(str(init), dict(trainable_weights(net)))
    del net
    from engine.train.preference import PairStream
    stream = PairStream(train, cfg.batch_size, cfg.max_seq_length, cfg.seed)
    order = [stream.indices(m) for m in range(steps)]  # Tailor's batches, given to both
    runs: dict = {"tailor": [], "mlx-lm-lora": []}
    load_start = os.getloadavg()
    sides = [("tailor", sys.executable, TAILOR_CHILD), ("mlx-lm-lora", a.peer_python, PEER_CHILD)]
    for r in range(a.rounds):  # interleaved A/B: the first side alternates each round
        for side, python, code in sides[::-1] if a.peer_first == (r % 2 == 0) else sides:
            folder = work / side
            folder.mkdir(exist_ok=True)
            job = {"model": str(model_dir), "config": cfg_kw, "init": str(init),
                   "train": str(work / "train.json"), "out": str(folder), "steps": steps,
                   "num_layers": adapter_config.get("num_layers", -1),
                   "lora_parameters": adapter_config["lora_parameters"], "order": order}
            runs[side].append(_run(python, code, job, folder))
            print(f"round {r + 1}", side, json.dumps(runs[side][-1]), f"load {os.getloadavg()}",
                  flush=True)
    # each side's figures: the round with the median CPU time
    results = {s: sorted(v, key=lambda x: x["cpu_seconds"])[len(v) // 2] for s, v in runs.items()}
    evals = _losses(model_dir, cfg_kw, {s: work / s / "final.safetensors" for s in results},
                    {"held-out": valid})
    print(f"\nmodel: qwen2 tiny family {MODEL}, {len(train)} training pairs, "
          f"{len(valid)} held-out, {steps} steps ({a.epochs} epoch(s)), settings {SETTINGS}")
    for side, r in results.items():
        h = evals[(side, "held-out")]
        ref = (f" (reference pre-pass {r['reference_seconds']:.2f} s)"
               if "reference_seconds" in r else "")
        print(f"{side:12s} training {r['seconds']:7.2f} s (CPU {r['cpu_seconds']:7.2f} s){ref}  "
              f"MLX peak {r['mlx_peak'] / 2**20:7.1f} "
              f"MiB  RSS {r['rss'] / 2**20:7.1f} MiB  last step loss {r['last_loss']:.4f}  "
              f"final held-out loss {h['loss']:.4f} "
              f"(accuracy {h['reward_accuracy']})")
    t, p = results["tailor"], results["mlx-lm-lora"]
    lt, lp = evals[("tailor", "held-out")]["loss"], evals[("mlx-lm-lora", "held-out")]["loss"]
    print(f"\nload average {load_start} at the start, {os.getloadavg()} at the end "
          f"(2 cores); CPU time is process time, all threads")
    print(f"\nspeed ratio {p['seconds'] / t['seconds']:.2f} wall, "
          f"{p['cpu_seconds'] / t['cpu_seconds']:.2f} CPU (goal >= 1.5), MLX memory ratio "
          f"{t['mlx_peak'] / p['mlx_peak']:.2f}, RSS ratio {t['rss'] / p['rss']:.2f} "
          f"(goal <= 1), final held-out loss ratio {lt / lp:.3f} (goal within 2%)")


if __name__ == "__main__":
    main()
