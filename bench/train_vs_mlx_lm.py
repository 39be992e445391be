"""Tailor's trainer against `mlx_lm lora` on the same model, data and settings, one epoch each.

    .venv/bin/python bench/train_vs_mlx_lm.py [--train-examples 80] [--keep DIR]

Builds (no downloads) a Qwen2-style model of a few million parameters with a byte-level BPE
vocabulary of 8192 tokens, so the output layer weighs as in real small models, and a chat
dataset whose prompt and answer lengths spread like real ones (log-normal, 3 to ~600 tokens).
Both trainers run as subprocesses (`python -m engine train ...` and `python -m mlx_lm lora -c
config.yaml`) under the same small wrapper that reports MLX's peak memory at exit; the final
validation loss of both adapters is then measured by one evaluator (mlx-lm's own `evaluate` on
the validation set, prompts masked), so the losses are compared like for like.

Ends with one line: `speed ratio S, val loss ratio L, memory ratio M` (mlx-lm wall time over
Tailor's; Tailor's val loss and peak memory over mlx-lm's).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
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


def make_chats(n: int, seed: int) -> list[dict]:
    """Chats with log-normal prompt/answer lengths; the answer restates the prompt's last
    words in reverse and closes with a fixed phrase, so there is something to learn."""
    rng = random.Random(seed)
    lexicon = _words(random.Random(1), 12000)
    weights = [1 / (i + 1) for i in range(len(lexicon))]  # Zipf-like, as words are
    chats = []
    for _ in range(n):
        n_user = min(400, max(3, int(rng.lognormvariate(math.log(45), 0.8))))
        n_ans = min(300, max(2, int(rng.lognormvariate(math.log(30), 0.8))))
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
    """Run ``python -c WRAPPER module args...``; wall time, peak MLX memory, max RSS."""
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
    return {"wall_s": wall, "peak_bytes": peak[-1] if peak else 0,
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-examples", type=int, default=80)
    ap.add_argument("--valid-examples", type=int, default=24)
    ap.add_argument("--keep", type=Path, default=None, help="work in this folder and keep it")
    a = ap.parse_args()
    a.train_examples -= a.train_examples % SETTINGS["batch_size"]  # one exact epoch for both

    work = a.keep or Path(tempfile.mkdtemp(prefix="tailor-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("model", "data", "home", "mlx-adapter"):
        shutil.rmtree(work / sub, ignore_errors=True)
    train = make_chats(a.train_examples, seed=1)
    valid = make_chats(a.valid_examples, seed=2)
    corpus = [m["content"] for c in make_chats(3000, seed=3) for m in c["messages"]]
    corpus += _words(random.Random(1), 12000)  # every word once, so BPE reaches 8k tokens
    model_dir = build_model(work / "model", corpus)
    data = work / "data"
    data.mkdir()
    for name, rows in (("train", train), ("valid", valid)):
        with open(data / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    import mlx_lm
    from mlx.utils import tree_flatten

    model, tok = mlx_lm.load(str(model_dir))
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    lengths, trained = [], 0
    for c in train:
        full = tok.apply_chat_template(c["messages"])
        prompt = tok.apply_chat_template(c["messages"][:-1], add_generation_prompt=True)
        lengths.append(len(full))
        trained += len(full) - len(prompt)
    lengths.sort()
    steps = a.train_examples // SETTINGS["batch_size"]
    warm = int(round(SETTINGS["warmup"] * steps))
    print(f"model: qwen2-style, {n_params / 1e6:.2f} M parameters, vocabulary {len(tok.vocab)}")
    print(f"data: {len(train)} train / {len(valid)} valid chats; tokens per example min "
          f"{lengths[0]}, median {lengths[len(lengths) // 2]}, p95 "
          f"{lengths[int(0.95 * len(lengths))]}, max {lengths[-1]}; {sum(lengths)} tokens, "
          f"{trained} trained (answers)")
    print(f"settings: LoRA rank {SETTINGS['rank']} alpha {SETTINGS['alpha']} on all linear "
          f"layers of all blocks, batch {SETTINGS['batch_size']}, lr {SETTINGS['learning_rate']}"
          f" cosine with {warm} warm-up steps, 1 epoch = {steps} steps, prompts masked")
    del model

    env = {**os.environ, "TAILOR_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    events = work / "tailor-events.jsonl"
    events.unlink(missing_ok=True)
    tailor = run_wrapped(
        ["engine", "train", "--model", str(model_dir), "--data", str(data), "--name", "bench",
         "--epochs", "1", "--batch-size", str(SETTINGS["batch_size"]),
         "--rank", str(SETTINGS["rank"]), "--alpha", str(SETTINGS["alpha"]),
         "--dropout", str(SETTINGS["dropout"]), "--learning-rate",
         str(SETTINGS["learning_rate"]), "--warmup", str(SETTINGS["warmup"]),
         "--grad-clip", "0", "--eval-every", "0", "--save-every", "1000000",
         "--seed", str(SETTINGS["seed"]), "--max-seq-length", "4096", "--no-dedupe",
         "--events", str(events), "--quiet"], env, work / "tailor.log")
    ev = [json.loads(l) for l in events.read_text().splitlines()]
    t_steps = [e for e in ev if e["event"] == "step"]
    t_vals = [e["val_loss"] for e in ev if e["event"] == "validation"]

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
    mlx = run_wrapped(["mlx_lm", "lora", "-c", str(work / "mlx-lm.yaml")], env,
                      work / "mlx-lm.log")

    t_loss = evaluate_adapter(model_dir, work / "home" / "adapters" / "bench",
                              data / "valid.jsonl")
    m_loss = evaluate_adapter(model_dir, work / "mlx-adapter", data / "valid.jsonl")
    t_tps, m_tps = trained / tailor["wall_s"], trained / mlx["wall_s"]
    print(f"\n{'':22}{'tailor train':>16}{'mlx_lm lora':>16}")
    print(f"{'wall time (s)':22}{tailor['wall_s']:>16.1f}{mlx['wall_s']:>16.1f}")
    print(f"{'trained tokens/s':22}{t_tps:>16.0f}{m_tps:>16.0f}")
    print(f"{'peak MLX memory (MB)':22}{tailor['peak_bytes'] / 1e6:>16.1f}"
          f"{mlx['peak_bytes'] / 1e6:>16.1f}")
    print(f"{'max RSS (MB)':22}{tailor['max_rss_bytes'] / 1e6:>16.1f}"
          f"{mlx['max_rss_bytes'] / 1e6:>16.1f}")
    print(f"{'final val loss':22}{t_loss:>16.4f}{m_loss:>16.4f}")
    print(f"(Tailor's own first/last val loss: {t_vals[0]:.4f} -> {t_vals[-1]:.4f}; "
          f"{len(t_steps)} steps; in-loop {t_steps[-1]['tokens_per_second']:.0f} tok/s "
          f"incl. prompts)")
    print(f"work folder: {work}")
    speed = mlx["wall_s"] / tailor["wall_s"]
    loss_ratio = t_loss / m_loss
    mem = tailor["peak_bytes"] / mlx["peak_bytes"] if mlx["peak_bytes"] else float("nan")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"speed ratio {speed:.2f}, val loss ratio {loss_ratio:.3f}, memory ratio {mem:.2f}")


if __name__ == "__main__":
    main()
