"""The run's baseline: before the first training step, the base model's validation loss and its
greedy answers to a seeded sample of held-out prompts, stored in the run record
(``manifest["baseline"]``), so every later comparison is against the same prompts and the
same untrained answers.

Called once by engine/train/run.py, after the adapters are added and before step 1: a freshly
initialised LoRA/DoRA adapter adds exactly zero (its B matrix is zeros), so the model in hand
answers as the base does (tests/evaluate/test_baseline.py checks it against the base loaded
alone). A resumed run never recomputes it.
"""
from __future__ import annotations

import random
import time
from typing import Callable

from ..events import Job, Log
from ..results import BaselineResult

# Answers are cut at the longest sampled reference plus this margin, and never longer than
# BASELINE_MAX_TOKENS: a base answer longer than any reference shows nothing more, and the
# bound keeps the baseline a small part of a tiny test run (16 prompts of a few tokens each).
ANSWER_MARGIN = 8
BASELINE_MAX_TOKENS = 64
# A prompt longer than this is not sampled: its ids would bloat the record, which is
# rewritten at every checkpoint.
MAX_PROMPT_TOKENS = 1024


def heldout_prompts(examples, stops: set[int]) -> list[dict]:
    """Each held-out example's prompt and reference answer, as trained: the prompt is the
    tokens before the first trained one (the chat template's text up to the assistant's
    turn), the reference the first trained run without its end-of-turn token. Examples with
    no prompt before the trained text (plain text data) are skipped."""
    out = []
    for e in examples:
        mask = list(e.loss_mask)
        start = next((i for i, m in enumerate(mask) if m), None)
        if not start or start > MAX_PROMPT_TOKENS:
            continue
        end = start
        while end < len(mask) and mask[end]:
            end += 1
        reference = [int(t) for t in e.tokens[start:end]]
        while reference and reference[-1] in stops:
            reference.pop()
        out.append({"source": e.source, "prompt_tokens": [int(t) for t in e.tokens[:start]],
                    "reference_tokens": reference})
    return out


def sample_prompts(examples, count: int, seed: int, stops: set[int]) -> list[dict]:
    """``count`` held-out prompts drawn with ``seed`` (all when there are fewer), in the
    dataset's order."""
    pool = heldout_prompts(examples, stops)
    if len(pool) > count:
        keep = set(random.Random(seed).sample(range(len(pool)), count))
        pool = [p for i, p in enumerate(pool) if i in keep]
    return pool


def compute_baseline(model, tokenizer, valid, *, count: int, seed: int,
                     val_loss: Callable[[], float] | None, job: Job) -> BaselineResult:
    """The baseline of ``model`` (the base, or the base with fresh adapters) on ``valid``
    (TokenizedExamples). ``val_loss()`` is the run's own validation (same batches and mask).
    Raises Cancelled when ``job.cancel`` is set."""
    from .generation import greedy_answers
    from .greedy import stop_ids

    t0 = time.time()
    stops = stop_ids(tokenizer)
    prompts = sample_prompts(valid, count, seed, stops)
    longest = max((len(p["reference_tokens"]) for p in prompts), default=0)
    max_tokens = max(1, min(BASELINE_MAX_TOKENS, longest + ANSWER_MARGIN))
    result = BaselineResult(seed=seed, max_tokens=max_tokens)
    progress = job.progress("baseline", 0.0, 0.3)
    progress(0, 1, "the base model's validation loss")
    if val_loss is not None and valid:
        result.val_loss = float(val_loss())
    progress(1, 1, f"the base model's answers to {len(prompts)} held-out prompts")
    if prompts:
        was_training = bool(getattr(model, "training", False))
        model.eval()  # no dropout: the answers are the base's own
        try:
            answers = greedy_answers(model, tokenizer, [p["prompt_tokens"] for p in prompts],
                                     max_tokens=max_tokens, job=job.nested(0.3, 1.0),
                                     stage="baseline")
        finally:
            if was_training:
                model.train()
        for p, a in zip(prompts, answers):
            result.prompts.append({
                "source": p["source"], "prompt": tokenizer.decode(p["prompt_tokens"]),
                "prompt_tokens": p["prompt_tokens"],
                "reference": tokenizer.decode(p["reference_tokens"]).strip(),
                "answer": a.text.strip(), "tokens": list(a.token_ids),
                "finish_reason": a.finish_reason})
    if not prompts:
        result.note = ("no held-out prompts: the validation split is empty or has no prompt "
                       "before its trained text")
    result.seconds = round(time.time() - t0, 3)
    return result


def record_baseline(manifest: dict, folder, model, tokenizer, valid, cfg, *,
                    val_loss: Callable[[], float] | None, resumed: bool, job: Job) -> None:
    """Compute the baseline into ``manifest["baseline"]`` and write the manifest (``folder``)
    before training starts. Nothing when resuming (the record has the first run's), when the
    record already has one, or when ``cfg.baseline_prompts`` is 0 (disabled)."""
    from .. import library

    count = int(getattr(cfg, "baseline_prompts", 0) or 0)
    if resumed or count <= 0 or manifest.get("baseline"):
        return
    result = compute_baseline(model, tokenizer, valid, count=count, seed=int(cfg.seed),
                              val_loss=val_loss, job=job)
    manifest["baseline"] = result.to_dict()
    library.write_manifest(folder, manifest)
    loss = f"validation loss {result.val_loss:.4f}; " if result.val_loss is not None else ""
    job.report(Log(job=job.name, message=f"baseline: the base model's {loss}its answers to "
                   f"{len(result.prompts)} held-out prompts are in the run record "
                   f"({result.seconds:.1f} s)"))
