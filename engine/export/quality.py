"""Measured quality of an exported GGUF: how far llama.cpp running the file is from the
full-precision model, on the adapter's own held-out text.

After the verification has loaded the file in llama.cpp (verify.py), ``measure_quality``:

1. takes the text (``quality_text``): the adapter's validation split, re-derived and rendered
   exactly as training rendered it (engine/evaluate/sources.eval_split, which also checks the
   dataset's sha256), scoring its trained positions (the tokens training's validation loss
   scores). For a model folder, or an adapter whose split cannot be re-derived, the
   verification prompts with every position scored; the record says which and why. At most
   MAX_SCORED positions, examples cut at MAX_CONTEXT tokens.
2. runs the fused model in MLX with its weights in float32 and keeps its logits at the scored
   positions: the reference. Why MLX and not llama.cpp on an F16/F32 file: it is the model the
   adapter trained and the Playground runs, so the KL divergence is what the user loses by
   shipping the file; it needs no second GGUF (an F32 file is 4 bytes a weight, written and
   re-read); and llama.cpp on this file's F32 export agrees with it to verify.py's 1e-3
   relative bound, which shows up as the F32 row's KL (the floor; README table).
3. runs the file in llama.cpp (F32 KV cache, as the verification) on the same tokens, and per
   scored position computes KL(reference || file) and the file's negative log-likelihood of
   the next token, in float64.

The record (engine/results.ExportQuality, in the export's verification as ``quality``) holds
the mean, median, 99th percentile and largest KL, the file's and the reference's perplexity
(exp of the mean NLL), the share of positions where both pick the same top token, the counts
and what the text and the reference were.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..events import Job, TailorError
from ..results import ExportQuality

MAX_SCORED = 1024       # scored positions at most (the note's figures: ~1 s on a tiny model)
MAX_CONTEXT = 512       # tokens of one example at most: llama.cpp keeps n_ctx x vocab logits
# The reference logits are kept for every scored position until llama.cpp has run: at most
# this many bytes (a 152k vocabulary: 880 positions).
REFERENCE_BYTES = 512 << 20
# Above this size in float32 the reference runs in the checkpoint's own dtype (recorded).
F32_REFERENCE_MAX_BYTES = 8 << 30
ROWS_PER_CHUNK = 64     # float64 temporaries: ROWS x vocab x 8 bytes at a time


@dataclass
class QualityText:
    """The tokens the quality is measured on: each example's tokens and the positions whose
    next token is scored (position i predicts token i + 1)."""

    tokens: list[list[int]]
    scored: list[list[int]]
    text: str           # what the text is, for the record
    note: str = ""      # why it is not the held-out split, when it is not

    @property
    def count(self) -> int:
        return sum(len(s) for s in self.scored)


def select_examples(examples, max_scored: int, max_context: int = MAX_CONTEXT
                    ) -> tuple[list[list[int]], list[list[int]]]:
    """``examples`` [(tokens, loss_mask)] in order, each cut at ``max_context`` tokens and
    after its last scored position, until ``max_scored`` positions are taken (the last
    example's cut to the budget); examples without a scored position are skipped."""
    tokens, scored, left = [], [], max_scored
    for toks, mask in examples:
        if left <= 0:
            break
        toks = list(toks)[:max_context]
        pos = [i for i, m in enumerate(list(mask)[1:len(toks)]) if m][:left]
        if not pos:
            continue
        tokens.append(toks[:pos[-1] + 2])
        scored.append(pos)
        left -= len(pos)
    return tokens, scored


def quality_text(info, tokenizer, job: Job, max_scored: int = MAX_SCORED) -> QualityText:
    """The adapter ``info``'s validation split as training rendered it; the verification
    prompts (every position) for a model folder (``info`` None) or when the split cannot be
    re-derived or has nothing to score."""
    from .verify import PROMPTS

    if info is None:
        note = "a model folder has no held-out split"
    elif not (info.manifest.get("dataset") or {}).get("path"):
        note = f"adapter {info.name!r}'s record names no training dataset"
    else:
        from ..evaluate.sources import eval_split

        try:
            split = eval_split(info, None, tokenizer, job)
        except TailorError as e:
            note = f"its validation split could not be re-derived ({e.message})"
        else:
            tokens, scored = select_examples([(i.tokens, i.loss_mask) for i in split.items],
                                             max_scored)
            if scored:
                return QualityText(tokens, scored, f"validation split of {split.record['path']}"
                                   f" ({len(tokens)} of {len(split.items)} examples, trained "
                                   "tokens)")
            note = (f"its validation split has no trained token in the first {MAX_CONTEXT} "
                    "tokens of an example")
    lists = [list(tokenizer.encode(p, add_special_tokens=True)) for p in PROMPTS]
    tokens, scored = select_examples([(t, [1] * len(t)) for t in lists], max_scored)
    return QualityText(tokens, scored, "the verification prompts (every token)", note)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def position_figures(ref: np.ndarray, got: np.ndarray, targets: np.ndarray
                     ) -> dict[str, np.ndarray]:
    """Per position of [positions, vocab] logits ``ref`` (the reference) and ``got`` (the
    file): ``kl`` = KL(softmax(ref) || softmax(got)), ``nll`` and ``ref_nll`` of ``targets``
    (the next tokens), and ``same_top`` (both argmaxes equal)."""
    parts: dict[str, list] = {"kl": [], "nll": [], "ref_nll": [], "same_top": []}
    for lo in range(0, len(targets), ROWS_PER_CHUNK):
        r, g = log_softmax(ref[lo:lo + ROWS_PER_CHUNK]), log_softmax(got[lo:lo + ROWS_PER_CHUNK])
        t = np.asarray(targets[lo:lo + ROWS_PER_CHUNK])
        rows = np.arange(len(t))
        parts["kl"].append((np.exp(r) * (r - g)).sum(-1))
        parts["nll"].append(-g[rows, t])
        parts["ref_nll"].append(-r[rows, t])
        parts["same_top"].append(r.argmax(-1) == g.argmax(-1))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}


def summarize(figures: dict[str, np.ndarray]) -> dict:
    """The record's figures from position_figures' arrays (all examples concatenated)."""
    kl = figures["kl"]
    return {"kl_mean": float(kl.mean()), "kl_median": float(np.median(kl)),
            "kl_p99": float(np.percentile(kl, 99)), "kl_max": float(kl.max()),
            "perplexity": float(np.exp(figures["nll"].mean())),
            "reference_perplexity": float(np.exp(figures["ref_nll"].mean())),
            "same_top": float(figures["same_top"].mean()), "tokens": int(kl.size)}


def reference_logits(model_dir: Path, text: QualityText) -> tuple[list[np.ndarray], str]:
    """MLX's float32 logits at the scored positions of every example, with the model's
    weights in float32 (up to F32_REFERENCE_MAX_BYTES; else as stored). -> (logits, what
    the reference was)."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_map
    from mlx_lm import load

    from ..models.folder_files import readable_view

    with readable_view(model_dir) as view:  # files linked out of the folder are not read
        model, _ = load(str(view))
    weights = [v for _, v in tree_flatten(model.parameters())]
    dtypes = sorted({str(v.dtype).replace("mlx.core.", "") for v in weights})
    if sum(v.size for v in weights) * 4 <= F32_REFERENCE_MAX_BYTES:
        model.update(tree_map(lambda v: v.astype(mx.float32)
                              if mx.issubdtype(v.dtype, mx.floating) else v, model.parameters()))
        what = "MLX, the fused model with float32 weights" + \
            (f" (stored as {', '.join(dtypes)})" if dtypes != ["float32"] else "")
    else:
        what = f"MLX, the fused model in its stored {', '.join(dtypes)} (too large for float32)"
    out = []
    for toks, pos in zip(text.tokens, text.scored):
        logits = model(mx.array([toks]))[0]
        out.append(np.array(mx.take(logits, mx.array(pos), axis=0).astype(mx.float32)))
    return out, what


def file_logits(path: Path, text: QualityText, job: Job) -> list[np.ndarray]:
    """llama.cpp's logits at the scored positions, the file loaded as the verification loads
    it (F32 KV cache), with a context as long as the longest example."""
    from .verify import llama_logits, open_llama

    threads = max(1, min(8, os.cpu_count() or 1))
    llm = open_llama(path, n_ctx=max(64, max(len(t) for t in text.tokens)), n_threads=threads)
    try:
        out = []
        for toks, pos in zip(text.tokens, text.scored):
            job.cancel.raise_if_cancelled()
            out.append(llama_logits(llm, toks)[pos])
        return out
    finally:
        llm.close()


def measure_quality(path: Path, *, model_dir: Path, base_dir: Path, info, job: Job,
                    max_scored: int = MAX_SCORED) -> dict:
    """The quality record of the GGUF at ``path`` (ExportQuality as a dict): ``model_dir`` is
    the full-precision folder the file was written from, ``base_dir`` the base (its
    tokenizer), ``info`` the adapter's AdapterInfo (None for a model folder). A failure to
    measure is recorded in ``note`` (``measured`` False), never raised: the file is written
    and verified by then. Raises Cancelled."""
    from ..models.tokenizer import load_hf_tokenizer
    from .verify import LLAMA_RUNTIME

    t0 = time.perf_counter()
    prog = job.progress("quality", 0.0, 1.0)
    try:
        from ..models.load import read_config

        tok = load_hf_tokenizer(base_dir)
        cfg = read_config(model_dir)
        n_vocab = max(len(tok), int({**cfg.get("text_config", {}), **cfg}.get("vocab_size") or 0))
        budget = max(1, min(max_scored, REFERENCE_BYTES // (4 * max(1, n_vocab))))
        text = quality_text(info, tok, job, budget)
        prog(0, 3, f"quality: MLX reference on {text.count} tokens")
        ref, reference = reference_logits(model_dir, text)
        job.cancel.raise_if_cancelled()
        prog(1, 3, f"quality: llama.cpp on {text.count} tokens")
        got = file_logits(path, text, job)
        targets = [np.asarray(t)[np.asarray(p) + 1] for t, p in zip(text.tokens, text.scored)]
        figures = position_figures(np.concatenate(ref), np.concatenate(got),
                                   np.concatenate(targets))
    except (TailorError, ValueError, RuntimeError, OSError, MemoryError) as e:
        message = e.message if isinstance(e, TailorError) else f"{type(e).__name__}: {e}"
        return ExportQuality(note=f"quality not measured: {message}",
                             seconds=round(time.perf_counter() - t0, 3)).to_dict()
    prog(3, 3, "quality measured")
    return ExportQuality(measured=True, **summarize(figures), examples=len(text.tokens),
                         context_tokens=sum(len(t) for t in text.tokens), text=text.text,
                         reference=reference, runtime=LLAMA_RUNTIME, note=text.note,
                         seconds=round(time.perf_counter() - t0, 3)).to_dict()
