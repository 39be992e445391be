"""Held-out evaluation of a library adapter against its base, on the same examples.

``evaluate_heldout(adapter, job, data=None, ...) -> EvalReport``: the run's own validation
split by default (re-derived from the run record: the dataset file, whose sha256 must still
match, and the run's data settings and split seed), or any file the importer reads. For base
and adapter on each example: the loss (mean negative log-likelihood per trained token, the
tokens training scored) and, for answer-style data (the last turn is the assistant's), the
greedy answer beside the reference with exact match, token F1, ROUGE-L and length. The
examples where the adapter got worse come first. Nothing is written here (see record.py).
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ..events import ErrorCode, Job, TailorError
from ..results import EvalExample, EvalReport, EvalScores
from .generation import DEFAULT_BATCH_SIZE, PromptRenderer, greedy_answers
from .scores import answer_scores

DEFAULT_LIMIT = 64
AUTO_MAX_TOKENS = (16, 256)  # the automatic answer budget: longest reference + 8, in this range
REPORT_SCHEMA = "tailor.eval/1"


@dataclass
class HeldOut:
    """One example to evaluate: what training would score and, when it has one, the prompt
    the model answers and the dataset's reference answer."""

    source: str
    tokens: list[int]
    loss_mask: list[int]
    prompt: list[dict] | None = None  # the messages before the last assistant turn
    reference: str = ""


def evaluate_heldout(adapter: str, job: Job, *, data: str | Path | None = None,
                     limit: int = DEFAULT_LIMIT, seed: int = 0, max_tokens: int = 0,
                     batch_size: int = DEFAULT_BATCH_SIZE, library_dir: Path | None = None
                     ) -> EvalReport:
    """Evaluate ``adapter`` and its base on held-out examples -> EvalReport (not yet stored).

    ``limit`` examples at most (0: all), drawn with ``seed``; ``max_tokens`` 0 sizes the
    answers from the references. Raises TailorError (no such adapter, its base missing, the
    run's dataset changed or gone, an eval file with bad lines: the importer's file:line
    report) and Cancelled."""
    from mlx_lm.tuner.utils import load_adapters

    from ..models import load_model
    from ..models.safetensors_check import check_adapter_file
    from .record import adapter_fingerprint

    t0 = time.time()
    if limit < 0 or batch_size < 1 or max_tokens < 0:
        raise TailorError("--limit and --max-tokens must be 0 or more, --batch-size 1 or more")
    info, base = _adapter_and_base(adapter, library_dir)
    check_adapter_file(info.weights)  # a damaged adapter is named before anything loads
    adapter_sha = adapter_fingerprint(info.path)
    job.progress("load")(0, 1, "loading the base model")
    settings = info.manifest.get("settings") or {}
    model, tokenizer, _ = load_model(base["path"], settings.get("quantize_base") or None)
    items, data_record, template = _examples(info, data, tokenizer, limit, seed, job)
    renderer = PromptRenderer(tokenizer, template)
    answered = [i for i in items if i.prompt is not None]
    budget = max_tokens or _auto_budget(tokenizer, answered)
    prompts = [renderer.prompt_ids(i.prompt) for i in answered]
    job.cancel.raise_if_cancelled()
    model.eval()
    base_side = _side(model, tokenizer, items, prompts, budget, batch_size, job, 0.05, 0.5)
    load_adapters(model, str(info.path))
    model.eval()
    tuned_side = _side(model, tokenizer, items, prompts, budget, batch_size, job, 0.5, 0.95)
    if adapter_fingerprint(info.path) != adapter_sha:
        raise TailorError(f"adapter {adapter!r} changed while it was evaluated (a training run "
                          "saved new weights); no report was kept",
                          hint="evaluate again once the run has finished", code=ErrorCode.LOCKED)
    report = EvalReport(
        schema=REPORT_SCHEMA, adapter=info.name, created=time.time(), data=data_record,
        base_model=base, adapter_sha256=adapter_sha,
        settings={"limit": limit, "seed": seed, "max_tokens": budget,
                  "max_tokens_given": max_tokens, "batch_size": batch_size,
                  "chat_template": renderer.renderer.template_origin,
                  "quantize_base": settings.get("quantize_base") or None},
        versions=_versions(), adapter_status=info.status)
    _fill(report, items, answered, base_side, tuned_side)
    if data is None:
        _check_baseline(report, info, answered, base_side.answers)
    if base["matches_training"] is False:
        report.notes.append(f"the base model at {base['path']} is not the one the adapter was "
                            "trained on (its sha256 differs): the figures describe this pairing")
    if len(answered) < len(items):
        report.notes.append(f"{len(items) - len(answered)} examples have no answer to compare "
                            "(text, or a conversation not ending with the assistant): loss only")
    for note in report.notes:
        job.log(note, "warning")
    report.seconds = round(time.time() - t0, 2)
    return report


def _adapter_and_base(adapter: str, library_dir: Path | None):
    """(AdapterInfo, the report's base_model record with its resolved ``path``); TailorError
    for an adapter without weights or a base model that is not where training found it."""
    from .. import library
    from ..models import resolve_model
    from ..models.load import model_fingerprint
    from ..models.resolve import looks_like_path

    info = library.get_adapter(adapter, library_dir)
    if not info.weights.exists():
        raise TailorError(f"adapter {adapter!r} has no weights yet (status {info.status})",
                          hint="evaluate it once training has saved a checkpoint")
    rec = info.manifest.get("base_model") or {}
    path, given = rec.get("path") or "", rec.get("given") or ""
    if path and Path(path).is_dir():
        folder = Path(path)
    elif given and not looks_like_path(given):
        folder = resolve_model(given)  # a repo id: the Hugging Face cache, else the Hub
    else:
        where = path or given or "(not recorded)"
        raise TailorError(f"the base model of adapter {adapter!r} is missing: {where}",
                          hint="put the model folder back where it was (the adapter only "
                               "works on the model it was trained on), then evaluate again",
                          code=ErrorCode.BAD_INPUT)
    sha = model_fingerprint(folder)
    return info, {"path": str(folder), "given": given, "sha256": sha,
                  "architecture": rec.get("architecture", ""),
                  "matches_training": sha == rec.get("sha256") if rec.get("sha256") else None}


def _baseline_prompts(info) -> list[dict]:
    return list(((info.manifest.get("baseline") or {}).get("prompts")) or [])


def _check_baseline(report: EvalReport, info, answered: list[HeldOut], answers) -> None:
    """Compare the base's answers now with the run's baseline (the same base before step 1):
    they agree token for token unless the base, its template or the machine's arithmetic
    changed. Sets ``report.data["baseline"]`` and a note when some differ."""
    recorded = {p.get("source"): p for p in _baseline_prompts(info)}
    pairs = [(recorded[i.source], a) for i, a in zip(answered, answers) if i.source in recorded]
    if not pairs:
        return
    same = sum(_same_answer(list(rec.get("tokens") or []), rec.get("finish_reason"),
                            a.token_ids, a.finish_reason) for rec, a in pairs)
    report.data["baseline"] = {"prompts": len(pairs), "same_answers": same}
    if same < len(pairs):
        report.notes.append(f"the base answers {len(pairs) - same} of the run's {len(pairs)} "
                            "baseline prompts differently than before training: is it the same "
                            "base model and chat template?")


def _same_answer(old: list[int], old_end: str | None, new: list[int], new_end: str) -> bool:
    """Two greedy answers agree when one is the other, or a prefix of it cut by its own
    token budget (the baseline and the evaluation may allow different lengths)."""
    n = min(len(old), len(new))
    if old[:n] != new[:n]:
        return False
    if len(old) == len(new):
        return True
    shorter_end = old_end if len(old) < len(new) else new_end
    return shorter_end in ("length", None)


def _versions() -> dict:
    import mlx.core as mx
    import mlx_lm

    from .. import __version__

    return {"tailor": __version__, "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}


def _auto_budget(tokenizer, answered: list[HeldOut]) -> int:
    longest = max((len(tokenizer.encode(i.reference, add_special_tokens=False))
                   for i in answered), default=0)
    low, high = AUTO_MAX_TOKENS
    return max(low, min(high, longest + 8))


def _examples(info, data, tokenizer, limit: int, seed: int, job: Job):
    """(the HeldOut examples, the report's data record, the chat template to prompt with)."""
    from .sources import eval_split

    split = eval_split(info, data, tokenizer, job.nested(0.0, 0.05))
    # The run's own split: the baseline's prompts (answered by the base before step 1) are
    # always among the examples, so the base's answers now can be checked against them.
    recorded = {p.get("source") for p in _baseline_prompts(info)} if data is None else set()
    first = [i for i, it in enumerate(split.items) if it.source in recorded]
    rest = [i for i, it in enumerate(split.items) if it.source not in recorded]
    room = max(0, limit - len(first)) if limit else len(rest)
    if len(rest) > room:
        rest = random.Random(seed).sample(rest, room)
    chosen = sorted(first + rest) if not limit or len(first) <= limit else \
        sorted(random.Random(seed).sample(first, limit))
    items = [split.items[i] for i in chosen]
    record = dict(split.record, examples=len(split.items), evaluated=len(items),
                  answer_style=sum(i.prompt is not None for i in items))
    return items, record, split.chat_template


@dataclass
class _Side:
    losses: list[tuple[float, int]]  # (sum of log p, trained tokens) per example
    answers: list  # generation.Answer per answered example


def _side(model, tokenizer, items, prompts, budget, batch_size, job: Job, start: float,
          end: float) -> _Side:
    """Loss on every example, then greedy answers to the answered ones, on [start, end]."""
    from ..models.token_loss import answer_logprob  # (training's own loss arithmetic)

    mid = start + (end - start) * 0.2
    progress = job.progress("loss", start, mid)
    losses = []
    for n, item in enumerate(items):
        job.cancel.raise_if_cancelled()
        losses.append(answer_logprob(model, item.tokens, item.loss_mask))
        progress(n + 1, len(items), f"{n + 1} of {len(items)} examples scored")
    answers = greedy_answers(model, tokenizer, prompts, max_tokens=budget,
                             batch_size=batch_size, job=job.nested(mid, end), stage="answers")
    return _Side(losses, answers)


def _mean_loss(losses: list[tuple[float, int]]) -> tuple[float | None, int]:
    total = sum(s for s, _ in losses)
    n = sum(c for _, c in losses)
    return (-total / n if n else None), n


def _scores(losses, scored: list[dict], answers) -> EvalScores:
    loss, n = _mean_loss(losses)
    out = EvalScores(loss=loss, perplexity=math.exp(loss) if loss is not None and loss < 700
                     else None, trained_tokens=n)
    if scored:
        k = len(scored)
        out.exact_match = sum(s["exact_match"] for s in scored) / k
        out.f1 = sum(s["f1"] for s in scored) / k
        out.rouge_l = sum(s["rouge_l"] for s in scored) / k
        out.answer_words = sum(s["words"] for s in scored) / k
        out.answer_tokens = sum(len(a.token_ids) for a in answers) / k
    return out


def _fill(report: EvalReport, items, answered, base: _Side, tuned: _Side) -> None:
    """The per-example rows (worse first), the two summaries and the verdict."""
    answer_of = {id(i): (b, t) for i, b, t in zip(answered, base.answers, tuned.answers)}
    rows, base_scored, tuned_scored = [], [], []
    for item, b_loss, t_loss in zip(items, base.losses, tuned.losses):
        row = EvalExample(source=item.source, reference=item.reference,
                          trained_tokens=b_loss[1],
                          base_loss=-b_loss[0] / b_loss[1] if b_loss[1] else None,
                          adapter_loss=-t_loss[0] / t_loss[1] if t_loss[1] else None)
        if id(item) in answer_of:
            b, t = answer_of[id(item)]
            row.prompt = item.prompt[-1]["content"] if item.prompt else ""
            row.base_answer, row.adapter_answer = b.text.strip(), t.text.strip()
            row.base_scores = answer_scores(row.base_answer, item.reference)
            row.adapter_scores = answer_scores(row.adapter_answer, item.reference)
            base_scored.append(row.base_scores)
            tuned_scored.append(row.adapter_scores)
        row.change = _change(row)
        row.worse = row.change < 0
        rows.append(row)
    rows.sort(key=lambda r: (r.change, r.source))  # worse first, the worst at the top
    report.examples = rows
    report.base = _scores(base.losses, base_scored, base.answers)
    report.tuned = _scores(tuned.losses, tuned_scored, tuned.answers)
    report.worse = sum(r.worse for r in rows)
    report.better = sum(r.change > 0 for r in rows)
    report.verdict = verdict(report)


def _change(row: EvalExample) -> float:
    """How much better the adapter did on one example (< 0: worse): ROUGE-L gained when the
    example has an answer and the two differ, else the loss saved (nats per token)."""
    if row.base_scores and row.adapter_scores["rouge_l"] != row.base_scores["rouge_l"]:
        return row.adapter_scores["rouge_l"] - row.base_scores["rouge_l"]
    if row.base_loss is None or row.adapter_loss is None:
        return 0.0
    return round(row.base_loss - row.adapter_loss, 6)


def verdict(r: EvalReport) -> str:
    """One line: did the adapter beat its base on these held-out examples?"""
    n = len(r.examples)
    parts = []
    if r.base.loss is not None and r.tuned.loss is not None:
        parts.append(f"loss {r.base.loss:.3f} -> {r.tuned.loss:.3f}")
    if r.base.exact_match is not None:
        parts.append(f"exact match {r.base.exact_match:.0%} -> {r.tuned.exact_match:.0%}")
        parts.append(f"ROUGE-L {r.base.rouge_l:.2f} -> {r.tuned.rouge_l:.2f}")
    better = (r.tuned.loss is not None and r.base.loss is not None
              and r.tuned.loss < r.base.loss)
    head = ("the adapter does better than its base" if better else
            "the adapter does NOT do better than its base")
    return (f"{head} on {n} held-out examples ({', '.join(parts)}); worse on {r.worse}, "
            f"better on {r.better}")
