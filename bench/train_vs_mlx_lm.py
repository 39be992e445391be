"""Tailor's trainer against `mlx_lm lora` on the same model, data and settings, one epoch each,
on three length mixes in one invocation.

    .venv/bin/python bench/train_vs_mlx_lm.py [--scale 1.0] [--mixes short,current,long]
                                              [--keep DIR]

Builds (no downloads) a Qwen2-style model of a few million parameters with a byte-level BPE
vocabulary of 8192 tokens, so the output layer weighs as in real small models, and chat
datasets whose prompt and answer lengths spread log-normally: ``short`` (many short chats:
~12-word prompts, ~8-word answers), ``current`` (~45-word prompts, ~30-word answers, the mix of
the earlier figures) and ``long`` (short prompts, ~150-word answers: most tokens trained). On
the short mix Tailor also runs with ``--pack`` (rows of about four examples, batch 1, so a
step holds about as many examples as mlx-lm's batch of 4).

Every trainer runs as a subprocess (`python -m engine train ...`, `python -m mlx_lm lora -c
config.yaml`) under the same small wrapper that reports MLX's peak memory at exit; the peak
resident memory is the process's own (wait4's ru_maxrss). The final validation loss of every
adapter is measured by one evaluator (mlx-lm's model, one validation example at a time with
full logits, prompts masked), so the losses are compared like for like.

Ends with one line per run: `MIX: speed ratio S (CPU time ratio C), val loss ratio L, RSS ratio
R, MLX memory ratio M` (mlx-lm's wall and CPU time over Tailor's; Tailor's val loss, peak RSS
and MLX peak over mlx-lm's), each with its goal. CPU time (user + system of each trainer
process) and the load average at each run's start are printed beside the wall time: on a
shared machine the wall time swings with the load, the CPU time much less. Each Tailor run's
wall time is also split into its phases (start-up, validations, steps), from its events.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

VOCAB = 8192
MODEL = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 192,
         "num_hidden_layers": 4, "intermediate_size": 512, "num_attention_heads": 4,
         "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
         "max_position_embeddings": 4096, "tie_word_embeddings": True, "hidden_act": "silu",
         "torch_dtype": "float32"}
SETTINGS = {"rank": 8, "alpha": 16.0, "dropout": 0.0, "learning_rate": 5e-4, "batch_size": 4,
            "warmup": 0.05, "seed": 0}

# The wrapper both trainers run under: the module's own entry point, plus MLX's peak memory
# printed at exit (mlx-lm's new terminal UI no longer shows it).
WRAPPER = ("import atexit, runpy, sys, mlx.core as mx; "
           "atexit.register(lambda: print('BENCH_PEAK_BYTES', mx.get_peak_memory(), "
           "file=sys.stderr, flush=True)); "
           "mod = sys.argv[1]; sys.argv = [mod] + sys.argv[2:]; "
           "runpy.run_module(mod, run_name='__main__', alter_sys=True)")


# ----------------------------------------------------------------------------------------------
# Data and model

def _words(rng: random.Random, n: int) -> list[str]:
    syll = ["ka", "lo", "mi", "ten", "ra", "su", "pe", "do", "qua", "vin", "shi", "bor", "el",
            "an", "tu", "ge", "fa", "nor", "zi", "ha", "wu", "yel", "cra", "om", "pli", "dre",
            "bi", "cu", "jo", "ki", "lu", "mo", "ny", "ob", "ph", "ri", "sto", "tha", "ux", "ve"]
    out = set()
    while len(out) < n:
        out.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
    return sorted(out)


# (examples in the training set, median prompt words, median answer words) per mix
MIXES = {"short": (64, 12, 8), "current": (32, 45, 30), "long": (20, 10, 150)}


def make_chats(n: int, seed: int, user_words: int = 45, answer_words: int = 30) -> list[dict]:
    """Chats with log-normal prompt/answer lengths; the answer restates the prompt's last
    words in reverse and closes with a fixed phrase, so there is something to learn."""
    rng = random.Random(seed)
    lexicon = _words(random.Random(1), 12000)
    weights = [1 / (i + 1) for i in range(len(lexicon))]  # Zipf-like, as words are
    chats = []
    for _ in range(n):
        n_user = min(400, max(3, int(rng.lognormvariate(math.log(user_words), 0.8))))
        n_ans = min(300, max(2, int(rng.lognormvariate(math.log(answer_words), 0.8))))
        user = rng.choices(lexicon, weights, k=n_user)
        echo = list(reversed(user))[:n_ans]
        answer = echo + rng.choices(lexicon, weights, k=max(0, n_ans - len(echo)))
        chats.append({"messages": [
            {"role": "user", "content": " ".join(user).capitalize() + "?"},
            {"role": "assistant", "content": " ".join(answer).capitalize() + ". Hope that helps."}]})
    return chats


def build_model(out: Path, corpus: list[str]) -> Path:
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    from engine.tiny_models import CHATML_TEMPLATE

    out.mkdir(parents=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None,
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
        "chat_template": CHATML_TEMPLATE, "model_max_length": 4096}))
    vocab = tok.get_vocab_size()
    cfg = {**MODEL, "vocab_size": vocab, "eos_token_id": tok.token_to_id("<|im_end|>"),
           "bos_token_id": None, "pad_token_id": tok.token_to_id("<|endoftext|>")}
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    model_class, args_class = _get_classes(cfg)
    model = model_class(args_class.from_dict(cfg))
    rng = np.random.default_rng(0)
    weights = {}
    for name, v in tree_flatten(model.parameters()):
        if "norm" in name:
            a = np.ones(v.shape)
        elif name.endswith("bias"):
            a = np.zeros(v.shape)
        else:
            a = rng.normal(0, 1 / math.sqrt(v.shape[-1]), v.shape)
        weights[name] = mx.array(a.astype(np.float32))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    return out


# ----------------------------------------------------------------------------------------------
# Runs

def run_wrapped(module_args: list[str], env: dict, log: Path) -> dict:
    """Run ``python -c WRAPPER module args...``; wall and CPU time (user + system, the
    process's own: on a shared machine the fairer figure), peak MLX memory, max RSS, and the
    1-minute load average when it started."""
    load = os.getloadavg()[0]
    started = time.time()
    tic = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *module_args], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - tic
    text = log.read_text(errors="replace")
    if status != 0:
        sys.exit(f"{module_args[0]} failed (status {status}); see {log}:\n{text[-3000:]}")
    peak = [int(line.split()[1]) for line in text.splitlines()
            if line.startswith("BENCH_PEAK_BYTES")]
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "load": load,
            "started": started, "peak_bytes": peak[-1] if peak else 0,
            "max_rss_bytes": usage.ru_maxrss * 1024, "log": text}


def evaluate_adapter(model_dir: Path, adapter_dir: Path, valid_file: Path) -> float:
    """Validation loss of an adapter on the answer tokens and their end-of-turn token (the
    span both trainers train; mlx-lm also trains the newline after it, which is never
    generated), one example at a time with full logits: code shared by neither trainer."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx_lm

    from engine.data import DataConfig, prepare_dataset

    model, tok = mlx_lm.load(str(model_dir), adapter_path=str(adapter_dir))
    model.eval()
    ds = prepare_dataset(valid_file, tok, DataConfig(valid_fraction=0.0, dedupe=False,
                                                     max_seq_length=4096))
    examples = ds.train + ds.valid
    total, count = 0.0, 0
    for e in examples:
        ids = mx.array([e.tokens])
        mask = mx.array([e.loss_mask[1:]], dtype=mx.float32)
        ce = nn.losses.cross_entropy(model(ids[:, :-1]).astype(mx.float32), ids[:, 1:])
        total += (ce * mask).sum().item()
        count += int(sum(e.loss_mask[1:]))
    return total / count



def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def _lengths(tok, chats: list[dict]) -> tuple[list[int], int]:
    """Tokens per example (sorted) and trained tokens (answers) of ``chats``."""
    lengths, trained = [], 0
    for c in chats:
        full = tok.apply_chat_template(c["messages"])
        prompt = tok.apply_chat_template(c["messages"][:-1], add_generation_prompt=True)
        lengths.append(len(full))
        trained += len(full) - len(prompt)
    return sorted(lengths), trained


def _not_training() -> list[str]:
    """Flags that turn off work a Tailor run does besides training, which mlx-lm does not do
    (the base model's baseline answers, where this version records them)."""
    import dataclasses

    from engine.train.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return ["--baseline-prompts", "0"] if "baseline_prompts" in names else []


def run_tailor(model_dir: Path, data: Path, work: Path, name: str, env: dict,
               extra: list[str], batch_size: int) -> dict:
    events = work / f"{name}-events.jsonl"
    events.unlink(missing_ok=True)
    out = run_wrapped(
        ["engine", "train", "--model", str(model_dir), "--data", str(data), "--name", name,
         "--epochs", "1", "--batch-size", str(batch_size),
         "--rank", str(SETTINGS["rank"]), "--alpha", str(SETTINGS["alpha"]),
         "--dropout", str(SETTINGS["dropout"]), "--learning-rate",
         str(SETTINGS["learning_rate"]), "--warmup", str(SETTINGS["warmup"]),
         "--grad-clip", "0", "--eval-every", "0", "--save-every", "1000000",
         "--seed", str(SETTINGS["seed"]), "--no-dedupe", *_not_training(), *extra,
         "--events", str(events), "--quiet"], env, work / f"{name}.log")
    ev = [json.loads(line) for line in events.read_text().splitlines()]
    out["steps"] = len([e for e in ev if e["event"] == "step"])
    out["notes"] = [e["message"] for e in ev if e["event"] == "log"
                    and e["message"].startswith("packing:")]
    out["adapter"] = work / "home" / "adapters" / name
    out["phases"] = _phases(ev, out["started"])
    return out


def _phases(events: list[dict], started: float) -> str:
    """Where a Tailor run's wall time went, from its events' timestamps: start-up (imports,
    tokenizer, data, model load), the step-0 validation, the steps, the final validation and
    the end (adapter files, manifest)."""
    def first(pred):
        return next((e["time"] for e in events if pred(e)), None)

    marks = [("start-up", first(lambda e: e["event"] == "started")),
             ("validation 0", first(lambda e: e["event"] == "validation"
                                    and e["iteration"] == 0)),
             ("steps", max((e["time"] for e in events if e["event"] == "step"), default=None)),
             ("final validation", max((e["time"] for e in events if e["event"] == "validation"),
                                      default=None)),
             ("end", first(lambda e: e["event"] == "finished"))]
    parts, prev = [], started
    for label, at in marks:
        if at is not None:
            parts.append(f"{label} {at - prev:.1f}")
            prev = at
    return ", ".join(parts) + " s"


def run_mlx_lm(model_dir: Path, data: Path, work: Path, env: dict, steps: int) -> dict:
    warm = int(round(SETTINGS["warmup"] * steps))
    cfg = {"model": str(model_dir), "train": True, "data": str(data), "fine_tune_type": "lora",
           "optimizer": "adam", "seed": SETTINGS["seed"], "num_layers": -1,
           "batch_size": SETTINGS["batch_size"], "iters": steps, "val_batches": -1,
           "learning_rate": SETTINGS["learning_rate"], "steps_per_report": 10,
           "steps_per_eval": 10 ** 6, "adapter_path": str(work / "mlx-adapter"),
           "save_every": 10 ** 6, "max_seq_length": 4096, "mask_prompt": True,
           "grad_checkpoint": False,
           "lr_schedule": {"name": "cosine_decay", "warmup": warm,
                           "arguments": [SETTINGS["learning_rate"], steps - warm, 0.0]},
           "lora_parameters": {"rank": SETTINGS["rank"], "dropout": SETTINGS["dropout"],
                               "scale": SETTINGS["alpha"] / SETTINGS["rank"]}}
    import yaml

    (work / "mlx-lm.yaml").write_text(yaml.safe_dump(cfg))
    out = run_wrapped(["mlx_lm", "lora", "-c", str(work / "mlx-lm.yaml")], env,
                      work / "mlx-lm.log")
    out["steps"], out["adapter"] = steps, work / "mlx-adapter"
    # its own report of each validation's seconds ("  16    val 6.536    5.11s")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out["log"])
    vals = [float(m) for m in re.findall(r"\bval [0-9.]+\s+([0-9.]+)s", plain)]
    if vals:
        out["phases"] = ("validations " + " + ".join(f"{v:.1f}" for v in vals)
                         + f" s of {out['wall_s']:.1f} s (its log)")
    return out


def run_mix(mix: str, scale: float, model_dir: Path, tok, root: Path) -> list[str]:
    """One mix: mlx-lm, Tailor (and Tailor packed on the short mix); -> its summary lines."""
    n, user_words, answer_words = MIXES[mix]
    n = max(SETTINGS["batch_size"], int(n * scale))
    n -= n % SETTINGS["batch_size"]  # one exact epoch for both
    work = root / mix
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    data = work / "data"
    train = make_chats(n, 1, user_words, answer_words)
    _write_jsonl(data / "train.jsonl", train)
    _write_jsonl(data / "valid.jsonl", make_chats(max(8, n // 4), 2, user_words, answer_words))
    lengths, trained = _lengths(tok, train)
    steps = n // SETTINGS["batch_size"]
    print(f"\n== mix {mix!r}: {n} train chats; tokens per example min {lengths[0]}, median "
          f"{lengths[len(lengths) // 2]}, max {lengths[-1]}; {sum(lengths)} tokens, {trained} "
          f"trained ({100 * trained / sum(lengths):.0f}%); 1 epoch = {steps} steps of "
          f"{SETTINGS['batch_size']}", flush=True)
    env = {**os.environ, "TAILOR_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    runs = {"mlx_lm lora": run_mlx_lm(model_dir, data, work, env, steps)}
    runs["tailor"] = run_tailor(model_dir, data, work, "bench", env,
                                ["--max-seq-length", "4096"], SETTINGS["batch_size"])
    if mix == "short":
        # rows of about batch-size examples, one row a step: as many examples per step
        mean = sum(lengths) / len(lengths)
        row = max(lengths[-1], 8 * math.ceil(SETTINGS["batch_size"] * mean / 8))
        runs["tailor --pack"] = run_tailor(model_dir, data, work, "packed", env,
                                           ["--pack", "--max-seq-length", str(row)], 1)
    for r in runs.values():
        r["val_loss"] = evaluate_adapter(model_dir, r["adapter"], data / "valid.jsonl")
        r["tps"] = trained / r["wall_s"]
    _print_table(runs)
    ref = runs["mlx_lm lora"]
    lines = []
    for label, r in runs.items():
        if label == "mlx_lm lora":
            continue
        goal = 2.5 if label.endswith("--pack") else 2.0
        speed, loss = ref["wall_s"] / r["wall_s"], r["val_loss"] / ref["val_loss"]
        cpu = ref["cpu_s"] / r["cpu_s"]
        rss = r["max_rss_bytes"] / ref["max_rss_bytes"]
        mem = r["peak_bytes"] / ref["peak_bytes"] if ref["peak_bytes"] else float("nan")
        verdicts = [("speed", speed >= goal), ("val loss", loss <= 1.02), ("RSS", rss <= 1.0)]
        missed = [name for name, ok in verdicts if not ok]
        lines.append(f"{mix} / {label}: speed ratio {speed:.2f} (goal >= {goal}; CPU time "
                     f"ratio {cpu:.2f}), val loss ratio "
                     f"{loss:.3f} (goal <= 1.02: at most 2% worse), RSS ratio {rss:.2f} (goal "
                     f"<= 1), MLX memory ratio {mem:.2f}: "
                     + ("all goals met" if not missed else "NOT met: " + ", ".join(missed)))
    for label, r in runs.items():
        for note in r.get("notes", []):
            print("  " + note)
        if r.get("phases"):
            print(f"  {label}: {r['phases']}")
    return lines


def _print_table(runs: dict) -> None:
    print(f"{'':22}" + "".join(f"{k:>17}" for k in runs))
    rows = [("wall time (s)", lambda r: f"{r['wall_s']:.1f}"),
            ("CPU time (s)", lambda r: f"{r['cpu_s']:.1f}"),
            ("load at start", lambda r: f"{r['load']:.1f}"),
            ("optimizer steps", lambda r: f"{r['steps']}"),
            ("trained tokens/s", lambda r: f"{r['tps']:.0f}"),
            ("peak RSS (MB)", lambda r: f"{r['max_rss_bytes'] / 1e6:.1f}"),
            ("peak MLX memory (MB)", lambda r: f"{r['peak_bytes'] / 1e6:.1f}"),
            ("final val loss", lambda r: f"{r['val_loss']:.4f}")]
    for label, cell in rows:
        print(f"{label:22}" + "".join(f"{cell(r):>17}" for r in runs.values()), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every mix's number of training examples")
    ap.add_argument("--mixes", default=",".join(MIXES), help="comma-separated, of: "
                    + ", ".join(MIXES))
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    a = ap.parse_args()
    mixes = [m.strip() for m in a.mixes.split(",") if m.strip()]
    unknown = [m for m in mixes if m not in MIXES]
    if unknown:
        ap.error(f"unknown mix {', '.join(unknown)}; mixes: {', '.join(MIXES)}")
    tic, load_at_start = time.perf_counter(), os.getloadavg()[0]
    root = a.keep or Path(tempfile.mkdtemp(prefix="tailor-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "model", ignore_errors=True)
    corpus = [m["content"] for c in make_chats(3000, seed=3) for m in c["messages"]]
    corpus += _words(random.Random(1), 12000)  # every word once, so BPE reaches 8k tokens
    model_dir = build_model(root / "model", corpus)

    import mlx_lm
    from mlx.utils import tree_flatten

    model, tok = mlx_lm.load(str(model_dir))
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    del model
    print(f"model: qwen2-style, {n_params / 1e6:.2f} M parameters, vocabulary {len(tok.vocab)}")
    print(f"settings: LoRA rank {SETTINGS['rank']} alpha {SETTINGS['alpha']} on all linear "
          f"layers of all blocks, batch {SETTINGS['batch_size']}, lr {SETTINGS['learning_rate']}"
          f" cosine with {SETTINGS['warmup']:.0%} warm-up, one epoch, prompts masked")
    lines = [line for mix in mixes for line in run_mix(mix, a.scale, model_dir, tok, root)]
    print(f"\nwork folder: {root}; whole bench {time.perf_counter() - tic:.0f} s; load average "
          f"at the end {os.getloadavg()[0]:.1f} (at the start {load_at_start:.1f}) on "
          f"{os.cpu_count()} CPUs")
    if a.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
