"""Does `--imatrix auto` make low-bit exports closer to the model? (issue 21)

The base is a fixture model trained from its random init on its own data (default
``--base trained``): every parameter of a tiny llama (256 wide by default, so the K-quant
blocks apply) trained in plain MLX on rendered arithmetic chats and word-corpus text
(tests/export/trained_fixture.py) until its loss is far below a uniform guess. A LoRA adapter
is then trained on other arithmetic chats (learnable, so the held-out split means something),
and each type is exported twice: without an importance matrix and with `--imatrix auto`
(computed once over the adapter's training split, then given back as a file for the other
types). Every export runs the full verification, whose quality step
(engine/export/quality.py) measures in llama.cpp the mean KL divergence of the file's
next-token distribution from the fused model in MLX (float32) on the adapter's held-out
split, and the perplexity there. ``--base random`` keeps the earlier random-weight base.

Checks printed with the figures: the matrix against llama.cpp's own collector
(tests/export/imatrix_oracle.py) run on the F32 export over the same chunks, per tensor kind
(so every kind's columns are shown to line up), and how uneven each kind's matrix is.

    .venv/bin/python bench/imatrix_quality.py                       # trained base, seed 0
    .venv/bin/python bench/imatrix_quality.py --seeds 0 1 --quants q2_k q3_k_m q4_k_m
    .venv/bin/python bench/imatrix_quality.py --base random --layers 8
    .venv/bin/python bench/imatrix_quality.py --outliers 4   # trained with outlier channels
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def with_outliers(model: Path, dest: Path, n: int, seed: int) -> Path:
    """A copy of `model` whose RMSNorm weights feeding the blocks' matrices have the same n
    channels (seeded) scaled by 10-30x in every layer, after the fact (the random base; a
    trained base is trained with them: trained_fixture.scale_norm_channels)."""
    import shutil

    import mlx.core as mx

    from tests.export.trained_fixture import NORMS_BEFORE_MATRICES, outlier_scale

    shutil.copytree(model, dest)
    weights, meta = mx.load(str(dest / "model.safetensors"), return_metadata=True)
    norms = [k for k in weights if k.removesuffix(".weight").endswith(NORMS_BEFORE_MATRICES)]
    scale, pairs = outlier_scale(weights[norms[0]].shape[0], n, seed)
    for k in norms:
        weights[k] = weights[k] * mx.array(scale).astype(weights[k].dtype)
    mx.save_safetensors(str(dest / "model.safetensors"), weights, metadata=meta)
    print(f"outliers (channel, factor): {pairs} in {len(norms)} norms")
    return dest


def export(args: list[str]) -> tuple[dict, float]:
    """`tailor export ARGS` in this process -> (the record, CPU seconds)."""
    from engine.cli import main as cli_main
    from engine.export.gguf_export import record_path

    t0 = time.process_time()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(["export", *args])
    cpu = time.process_time() - t0
    out = Path(args[args.index("--out") + 1])
    if not record_path(out).exists():
        raise SystemExit(f"export failed ({code}):\n{err.getvalue()[-2000:]}")
    return json.loads(record_path(out).read_text()), cpu


def base_model(a, root: Path, seed: int) -> Path:
    """The base the adapter is trained on: pretrained (``--base trained``) or random."""
    from engine.tiny_models import cached_tiny_model
    from tests.export.trained_fixture import pretrain_fixture, sums

    size = dict(hidden_size=a.hidden, intermediate_size=a.intermediate,
                num_hidden_layers=a.layers)
    if a.base == "random":
        model = cached_tiny_model(a.kind, **size, **({"seed": seed} if seed else {}))
    else:
        trained = root / f"base-trained-s{seed}-o{a.outliers}"
        if not trained.exists():
            init = cached_tiny_model(a.kind, **size, seed=seed, embed_std=0.02)
            r = pretrain_fixture(init, trained, sums(a.pretrain_chats, offset=5000),
                                 steps=a.pretrain_steps, seed=seed,
                                 outlier_channels=a.outliers)
            print(f"pretrained {a.kind} {a.hidden}x{a.layers} (seed {seed}) {r.steps} steps, "
                  f"outlier channels {r.outliers}: held-out loss {r.loss_before:.3f} -> "
                  f"{r.loss_after:.3f} nats/token (uniform {r.uniform:.3f}; {r.cpu_s:.0f} s "
                  f"CPU, load {os.getloadavg()})", flush=True)
        return trained
    if a.outliers:
        dest = root / f"base-outliers-s{seed}"
        model = dest if dest.exists() else with_outliers(model, dest, a.outliers,
                                                         a.outlier_seed)
    return model


def train(a, root: Path, model: Path, name: str):
    """The LoRA adapter ``name`` on ``a.examples`` arithmetic chats (reused if trained)."""
    from engine.library import get_adapter
    from engine.train.config import make_config
    from engine.train.run import train_adapter
    from tests.export.trained_fixture import write_sums

    if (root / "home" / "adapters" / name / "adapters.safetensors").exists():
        print(f"reusing adapter {name} trained in {root}")
        return get_adapter(name)
    data = write_sums(root / "sums.jsonl", a.examples)
    t0 = time.process_time()
    info = train_adapter(str(model), data, name, make_config(
        iters=a.iters, eval_every=0, rank=8, batch_size=8, learning_rate=a.lr,
        baseline_prompts=0))
    print(f"trained adapter {name} on {a.examples} examples, {a.iters} steps "
          f"({time.process_time() - t0:.0f} s CPU)")
    return info


def exports(a, root: Path, name: str) -> list[tuple]:
    """Each type without and with the matrix -> [(quant, plain record, weighted record,
    plain CPU s, weighted CPU s)]; the first weighted export computes the matrix."""
    matrix, rows = None, []
    for quant in a.quants:
        plain, plain_cpu = export(["--adapter", name, "--quant", quant,
                                   "--out", str(root / f"{name}-plain-{quant}.gguf")])
        out = root / f"{name}-imatrix-{quant}.gguf"
        given = ["--imatrix", "auto", "--imatrix-ctx", str(a.ctx)] if matrix is None else \
            ["--imatrix", matrix]
        weighted, w_cpu = export(["--adapter", name, "--quant", quant, *given,
                                  "--out", str(out)])
        matrix = matrix or weighted["metadata"]["imatrix"]["path"]
        rows.append((quant, plain, weighted, plain_cpu, w_cpu))
    return rows


def check_against_llama_cpp(a, root: Path, name: str, info, matrix_path: str) -> None:
    """The saved matrix against llama.cpp's collector on the adapter's F32 export over the
    same chunks: per tensor kind the largest relative difference of the sums, whether the
    counts agree, and how uneven the matrix is (largest / mean column, mean over layers)."""
    import numpy as np

    from engine.events import ListReporter, as_job
    from engine.export.imatrix import cut_chunks
    from engine.export.imatrix_file import load_imatrix
    from engine.export.imatrix_source import _bos_id, _training_tokens
    from engine.models.tokenizer import load_tokenizer
    from tests.export.imatrix_oracle import llama_cpp_imatrix

    f32 = root / f"{name}-f32.gguf"
    if not f32.exists():
        export(["--adapter", name, "--quant", "f32", "--no-verify", "--out", str(f32)])
    tok = load_tokenizer(info.manifest["base_model"]["path"])
    tokens, _ = _training_tokens(info, tok, as_job("bench", ListReporter(), None))
    chunks = cut_chunks(tokens, a.ctx, _bos_id(tok))
    want, want_counts = llama_cpp_imatrix(f32, chunks)
    ours = load_imatrix(matrix_path)
    kinds: dict[str, list] = {}
    for t in sorted(set(want) | set(ours.sums)):
        if t not in want or t not in ours.sums:
            kinds.setdefault(t.split(".")[2], []).append((np.inf, False, 0.0))
            continue
        w, o = want[t].reshape(-1), ours.sums[t].astype(np.float64).reshape(-1)
        same = ours.counts[t].tolist() == want_counts[t].tolist()
        per_col = o / max(1.0, float(ours.counts[t].max()))
        kinds.setdefault(t.split(".")[2], []).append(
            (np.abs(o - w).max() / np.abs(w).max(), same, per_col.max() / per_col.mean()))
    print(f"matrix vs llama.cpp's collector on {f32.name} ({len(chunks)} chunks):")
    print("| tensor kind | tensors | largest rel. difference | counts equal | "
          "largest / mean column |")
    print("|---|---|---|---|---|")
    for kind, v in kinds.items():
        print(f"| {kind} | {len(v)} | {max(x[0] for x in v):.1e} | {all(x[1] for x in v)} | "
              f"{np.mean([x[2] for x in v]):.1f} |")


def print_rows(rows: list[tuple], seed: int) -> None:
    im = rows[0][2]["metadata"]["imatrix"]
    print(f"importance matrix: {im['entries']} entries over {im['chunk_count']} chunks of "
          f"{im['chunk_size']} tokens ({im.get('tokens')} tokens of {im.get('data_kind')}); "
          f"tensors weighted: {[r[2]['metadata']['imatrix']['tensors_weighted'] for r in rows]}")
    q0 = rows[0][1]["verification"]["quality"]
    print(f"quality text: {q0['text']}; {q0['tokens']} scored positions; reference: "
          f"{q0['reference']}; reference perplexity {q0['reference_perplexity']:.3f}")
    print("| seed | type | KL mean without | KL mean with --imatrix auto | with / without | "
          "KL median without | with | ppl without | ppl with | same top without | with | "
          "export CPU s without | with |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for quant, plain, weighted, pc, wc in rows:
        qp, qw = plain["verification"]["quality"], weighted["verification"]["quality"]
        print(f"| {seed} | {quant.upper()} | {qp['kl_mean']:.5f} | {qw['kl_mean']:.5f} | "
              f"{qw['kl_mean'] / qp['kl_mean']:.3f} | {qp['kl_median']:.2e} | "
              f"{qw['kl_median']:.2e} | {qp['perplexity']:.3f} | "
              f"{qw['perplexity']:.3f} | {qp['same_top']:.3f} | {qw['same_top']:.3f} | "
              f"{pc:.1f} | {wc:.1f} |", flush=True)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", default="llama3")
    p.add_argument("--base", choices=["trained", "random"], default="trained")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=512)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="one base (init, pretraining order) per seed")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--pretrain-chats", type=int, default=4000)
    p.add_argument("--examples", type=int, default=600)
    p.add_argument("--iters", type=int, default=60)
    p.add_argument("--lr", type=float, default=1e-3, help="the adapter's learning rate")
    p.add_argument("--ctx", type=int, default=256, help="--imatrix-ctx")
    p.add_argument("--quants", nargs="+", default=["q2_k", "q3_k_m", "q4_k_m"])
    p.add_argument("--outliers", type=int, default=0, help="scale this many RMSNorm "
                   "channels by 10-30x: from the init, trained with (--base trained), or in a "
                   "copy of the random base before the adapter (0: none)")
    p.add_argument("--outlier-seed", type=int, default=0)
    p.add_argument("--no-llama-check", action="store_true",
                   help="skip comparing the matrix with llama.cpp's collector")
    p.add_argument("--reuse", default="", help="a folder of an earlier run: its bases and "
                   "adapters are used again (the exports are made anew)")
    return p.parse_args()


def main() -> None:
    a = parse()
    print(f"load average at start: {os.getloadavg()}")
    root = Path(a.reuse) if a.reuse else Path(tempfile.mkdtemp(prefix="imatrix-quality-"))
    print(f"folder: {root}")
    os.environ["TAILOR_HOME"] = str(root / "home")
    for old in root.glob("*.gguf*"):  # an earlier run's exports (--reuse)
        if "-f32.gguf" not in old.name:
            old.unlink()
    for seed in a.seeds:
        name = f"bench-s{seed}"
        info = train(a, root, base_model(a, root, seed), name)
        loss = info.manifest.get("loss_history", {}).get("valid") or [[0, None]]
        print(f"adapter validation loss {loss[0][1]} at step {loss[0][0]} -> {loss[-1][1]} "
              f"at step {loss[-1][0]}", flush=True)
        rows = exports(a, root, name)
        if not a.no_llama_check:
            check_against_llama_cpp(a, root, name, info,
                                    rows[0][2]["metadata"]["imatrix"]["path"])
        print_rows(rows, seed)
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
