"""Where does the importance matrix help or hurt? Per tensor, in MLX (issue 21).

For a folder left by bench/imatrix_quality.py (``<adapter>-plain-Q.gguf``,
``<adapter>-imatrix-Q.gguf``, the adapter in ``home``), puts the dequantized weights of each
file back into the fused float32 model in MLX and measures, on the adapter's held-out
positions (the quality step's text, engine/export/quality.py):
- the mean KL from the float model of the plain and the weighted model, twice: with every
  layer's input rounded to 8 bits as llama.cpp's CPU matmul rounds it (engine/export/
  activation_rounding.py: this reproduces the file's figures from llama.cpp on this machine),
  and with float activations (as MLX runs, and llama.cpp's Metal kernels read them); each
  with a paired bootstrap interval of their ratio and the share of the KL its 10 worst
  positions hold;
- per tensor, the true output error on the held-out activations, ||(W - Q) X|| ^ 2 /
  ||W X|| ^ 2, plain and weighted (not weighted by the matrix itself, so not circular);
- per tensor, the mean KL when only that tensor is taken from the weighted file (the others
  from the plain one): what the matrix buys or costs at that tensor alone;
- the KL (float activations from here on) with only the blocks' matrices quantized, without
  and with the matrix, and with only the tensors the matrix has no rows for (the embedding,
  the output head): the share of the file's KL the matrix can act on at all.

    .venv/bin/python bench/imatrix_ablation.py RUN_FOLDER ADAPTER q2_k q3_k_m
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fused(name: str):
    from engine.export.imatrix import gguf_names, in_float32
    from mlx.utils import tree_flatten

    from engine.fuse import fused_model, resolve_adapter

    info, acfg, base = resolve_adapter(name)
    model, config = fused_model(info, acfg, base)
    in_float32(model)
    names = gguf_names(model, config, str(base))
    present = {k.removesuffix(".weight") for k, _ in tree_flatten(model.parameters())}
    names.update({p: g for p, g in (("model.embed_tokens", "token_embd.weight"),
                                    ("lm_head", "output.weight")) if p in present})  # tied
    return info, base, model, config, names


def paired_ratio_interval(without: np.ndarray, with_: np.ndarray, draws: int = 2000,
                          seed: int = 0) -> tuple[float, float]:
    """The 95% interval of mean(with) / mean(without) over positions resampled together:
    whether a ratio measured on ~1,000 heavy-tailed positions is more than noise."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(without), size=(draws, len(without)))
    ratios = with_[picks].mean(axis=1) / without[picks].mean(axis=1)
    return float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))


def top_share(per_position: np.ndarray, n: int = 10) -> float:
    """The share of the KL sum held by its n largest positions."""
    return float(np.sort(per_position)[-n:].sum() / per_position.sum())


def file_plan(path: Path, by_gguf: dict[str, str], shapes: dict[str, tuple]) -> list:
    """The file's tensors as activation_rounding reads an export plan (name, HF name, shape,
    type), so the MLX run rounds each layer's input as llama.cpp does for that tensor."""
    import gguf

    return [SimpleNamespace(name=t.name, hf_name=by_gguf.get(t.name), ggml_type=t.tensor_type,
                            shape=shapes.get(t.name, tuple(int(n) for n in t.shape[::-1])))
            for t in gguf.GGUFReader(str(path)).tensors]


def print_kl_pair(label: str, per_plain: np.ndarray, per_w: np.ndarray) -> None:
    k_plain, k_w = float(per_plain.mean()), float(per_w.mean())
    low, high = paired_ratio_interval(per_plain, per_w)
    print(f"  {label}: mean KL without {k_plain:.5f}, with {k_w:.5f} ({k_w / k_plain:.3f}x, "
          f"95% bootstrap interval {low:.3f}-{high:.3f}); the 10 worst of {len(per_plain)} "
          f"positions hold {top_share(per_plain):.0%} and {top_share(per_w):.0%} of the sums; "
          f"positions better with the matrix: {(per_w < per_plain).mean():.0%}")


def report(quant: str, files: tuple[Path, Path], run: Run, floats: dict, X: dict) -> None:
    """Everything the module docstring lists for one type, for its plain and weighted
    files."""
    from engine.export.activation_rounding import llama_activation_rounding

    plain, weighted = (run.dequantize(f) for f in files)
    print(f"{quant.upper()}:")
    with llama_activation_rounding(run.model, run.plan(files[0])):
        rounded_plain = run.kls({**floats, **plain})
    with llama_activation_rounding(run.model, run.plan(files[1])):
        rounded_w = run.kls({**floats, **weighted})
    print_kl_pair("llama.cpp's CPU arithmetic (8-bit activations)", rounded_plain, rounded_w)
    per_plain, per_w = run.kls({**floats, **plain}), run.kls({**floats, **weighted})
    print_kl_pair("float activations (MLX, llama.cpp's Metal kernels)", per_plain, per_w)
    k_plain = float(per_plain.mean())
    # how much of the KL the matrix can act on: the blocks' matrices alone quantized
    # (without and with it), and alone the tensors it has no rows for (embedding, head)
    others = sorted(g for g in plain if g not in X)
    only = [run.kl({**floats, **{g: q[g] for g in X}}) for q in (plain, weighted)]
    rest = run.kl({**floats, **{g: plain[g] for g in others}})
    print(f"  only the weighted matrices quantized: KL without {only[0]:.5f}, with "
          f"{only[1]:.5f} ({only[1] / only[0]:.3f}x); only {', '.join(others)} quantized: "
          f"{rest:.5f}")
    print("| tensor | output err without | with | ratio | KL with this tensor alone "
          "weighted | vs without |")
    print("|---|---|---|---|---|---|")
    for g in sorted(X, key=lambda n: (int(n.split(".")[1]), n)):
        x = X[g].astype(np.float64)
        y = x @ floats[g].T.astype(np.float64)
        err = [float(((x @ (floats[g] - q[g]).T.astype(np.float64)) ** 2).sum()
                     / (y ** 2).sum()) for q in (plain, weighted)]
        alone = run.kl({**floats, **plain, g: weighted[g]})
        print(f"| {g} | {err[0]:.2e} | {err[1]:.2e} | {err[1] / err[0]:.2f} | "
              f"{alone:.5f} | {alone / k_plain:.3f} |", flush=True)


@dataclass
class Run:
    """The fused float model, the held-out text and its reference logits."""

    model: object
    config: dict
    by_gguf: dict[str, str]
    shapes: dict[str, tuple]
    text: object
    targets: np.ndarray
    ref: np.ndarray | None = None

    def logits(self, weights: dict[str, np.ndarray]) -> np.ndarray:
        import mlx.core as mx
        from mlx.utils import tree_unflatten

        self.model.update(tree_unflatten([(self.by_gguf[g], mx.array(w))
                                          for g, w in weights.items()]))
        return np.concatenate([np.array(self.model(mx.array([toks]))[0][mx.array(pos)])
                               for toks, pos in zip(self.text.tokens, self.text.scored)])

    def kls(self, weights) -> np.ndarray:
        from engine.export.quality import position_figures

        return position_figures(self.ref, self.logits(weights), self.targets)["kl"]

    def kl(self, weights) -> float:
        return float(self.kls(weights).mean())

    def dequantize(self, path: Path) -> dict:
        from tests.export.trained_fixture import dequantized

        return dequantized(path, self.config, self.shapes)

    def plan(self, path: Path) -> list:
        return file_plan(path, self.by_gguf, self.shapes)


def main() -> None:
    from mlx.utils import tree_flatten

    from engine.events import ListReporter, as_job
    from engine.export.quality import quality_text
    from engine.models.tokenizer import load_hf_tokenizer
    from tests.export.trained_fixture import layer_inputs

    root, name, quants = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    os.environ["TAILOR_HOME"] = str(root / "home")
    info, base, model, config, names = fused(name)
    params = dict(tree_flatten(model.parameters()))
    by_gguf = {g: p + ".weight" for p, g in names.items()}
    floats = {g: np.array(params[k]) for g, k in by_gguf.items()}
    text = quality_text(info, load_hf_tokenizer(base), as_job("b", ListReporter(), None))
    targets = np.concatenate([np.asarray(t)[np.asarray(p) + 1]
                              for t, p in zip(text.tokens, text.scored)])
    run = Run(model, config, by_gguf, {g: w.shape for g, w in floats.items()}, text, targets)
    run.ref = run.logits(floats)
    X = layer_inputs(model, {p: g for p, g in names.items() if g.startswith("blk.")},
                     text.tokens)
    for quant in quants:
        report(quant, (root / f"{name}-plain-{quant}.gguf", root / f"{name}-imatrix-{quant}.gguf"),
               run, floats, X)
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
