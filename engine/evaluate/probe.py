"""The forgetting probe: did the adapter keep the base model's general skills?

A general prompt set of our own writing (``resources/eval/general_probe.jsonl``: arithmetic,
short facts, following an instruction, a format request, a refusal; each with a reference
answer) goes through the base and the adapter, in the model's own chat template. Two measures:

- the mean log-likelihood per token of the reference answers (how likely each model finds the
  right answer). Robust even on small models whose greedy answers are poor for both: it moves
  smoothly, where an answer is either right or wrong;
- the share of greedy answers that changed, with the changed ones shown.

The verdict rests on the first (see ``MAX_LOGPROB_DROP``): a fine-tune is expected to change
many answers' wording, so a changed answer alone is not forgetting.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..atomic import sha256_file
from ..events import ErrorCode, Job, TailorError
from ..results import ProbeItem, ProbeResult
from .scores import exact_match

PROBE_FILE = paths.RESOURCES / "eval" / "general_probe.jsonl"
PROBE_MAX_TOKENS = 48  # the longest reference is 33 tokens on the fixtures' tokenizers

# The verdict's threshold: the reference answers' mean log-likelihood may fall by at most ln 2
# nats per token, i.e. each reference token on average half as likely as with the base. Why
# this: it is a fall no wording change explains (style adapters move general text by a few
# tenths of a nat), yet far below what an adapter that answers everything with one sentence does
# (several nats per token on the fixture models: tests/evaluate/test_probe.py).
MAX_LOGPROB_DROP = math.log(2)


@dataclass
class ProbePrompt:
    id: str
    category: str
    prompt: str
    reference: str
    line: int


def read_probe(path: Path | str = PROBE_FILE) -> list[ProbePrompt]:
    """The probe's prompts; TailorError naming file:line for a bad line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TailorError(f"{path}: cannot read the probe prompts ({e})") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            item = ProbePrompt(str(d["id"]), str(d["category"]), d["prompt"], d["reference"], n)
        except (ValueError, KeyError, TypeError) as e:
            raise TailorError(f"{path}:{n}: not a probe item ({type(e).__name__}: {e})",
                              hint='each line: {"id", "category", "prompt", "reference"}') \
                from None
        if not isinstance(item.prompt, str) or not isinstance(item.reference, str) or \
                not item.prompt.strip() or not item.reference.strip():
            raise TailorError(f"{path}:{n}: prompt and reference must be non-empty text")
        items.append(item)
    if not items:
        raise TailorError(f"{path}: no probe prompts in the file")
    return items


class _Chat:
    """Prompt ids (eval-core's PromptRenderer: the same text for every model) and the
    (tokens, answer mask) of a probe item in the model's chat template, as training renders
    it (engine/data/render.py)."""

    def __init__(self, tokenizer, chat_template: str = ""):
        from .generation import PromptRenderer

        self.tok = tokenizer
        self.prompts = PromptRenderer(tokenizer, chat_template=chat_template)
        self.renderer = self.prompts.renderer

    def prompt_ids(self, item: ProbePrompt) -> list[int]:
        return self.prompts.prompt_ids([{"role": "user", "content": item.prompt}])

    def scored(self, item: ProbePrompt) -> tuple[list[int], list[int]]:
        if not self.prompts.has_template:  # the reference continues the prompt, then EOS
            prompt = self.prompt_ids(item)
            answer = list(self.tok.encode(" " + item.reference, add_special_tokens=False))
            answer += [self.tok.eos_token_id] if self.tok.eos_token_id is not None else []
            return prompt + answer, [0] * len(prompt) + [1] * len(answer)
        from ..data.schemas import Example

        ex = Example(f"{PROBE_FILE.name}:{item.line}", messages=[
            {"role": "user", "content": item.prompt},
            {"role": "assistant", "content": item.reference}])
        t = self.renderer.tokenize([self.renderer.render(ex)])[0]
        return t.tokens, t.loss_mask


def _measure(model, tokenizer, items: list[ProbePrompt], max_tokens: int, job: Job,
             chat_template: str = "") -> list[tuple[str, float]]:
    """(greedy answer, mean log p per reference token) of each item; ``job``'s bar: the
    log-likelihoods first fifth, the batched greedy answers the rest."""
    from ..models.token_loss import answer_logprob  # (training's own loss arithmetic)
    from .generation import greedy_answers

    model.eval()
    chat = _Chat(tokenizer, chat_template)
    progress = job.progress("probe", 0.0, 0.2)
    logprobs = []
    for i, item in enumerate(items):
        job.cancel.raise_if_cancelled()
        total, n = answer_logprob(model, *chat.scored(item))
        logprobs.append(total / max(1, n))
        progress(i + 1, len(items), item.id)
    answers = greedy_answers(model, tokenizer, [chat.prompt_ids(i) for i in items],
                             max_tokens=max_tokens, job=job.nested(0.2, 1.0), stage="probe")
    return [(a.text.strip(), lp) for a, lp in zip(answers, logprobs)]


def adapter_and_base(adapter: str, library_dir: Path | None = None):
    """(AdapterInfo, base model folder) of a library adapter; TailorError naming the adapter
    and the folder when the base is not where training found it (or the weights are missing)."""
    from ..fuse import resolve_adapter
    from ..library import get_adapter

    info = get_adapter(adapter, library_dir)
    base = Path(info.base_model).expanduser() if info.base_model else None
    if base is not None and not base.is_dir():
        raise TailorError(f"the base model of adapter {adapter!r} is missing: {base}",
                          hint="put the model folder back where it was (the adapter only works "
                               "on the model it was trained on), then evaluate again",
                          code=ErrorCode.BAD_INPUT)
    info, _, base_dir = resolve_adapter(info)
    return info, base_dir


def _load_base(adapter: str, library_dir):
    """(AdapterInfo, base folder, model, tokenizer) of the adapter's base."""
    from ..models import load_model

    info, base_dir = adapter_and_base(adapter, library_dir)
    quant = (info.manifest.get("settings") or {}).get("quantize_base") or None
    model, tokenizer, _ = load_model(base_dir, quant)
    return info, base_dir, model, tokenizer


def forgetting_probe(adapter: str, job: Job, *, max_tokens: int = PROBE_MAX_TOKENS,
                     probe_file: Path | str | None = None, library_dir: Path | None = None,
                     max_drop: float = MAX_LOGPROB_DROP) -> ProbeResult:
    """Run the probe on the library adapter ``adapter`` against its base -> ProbeResult.

    Raises TailorError (no such adapter, its base missing, a bad probe file) and Cancelled."""
    from mlx_lm.tuner.utils import load_adapters

    from ..models.safetensors_check import check_adapter_file

    t0 = time.time()
    probe = Path(probe_file) if probe_file else PROBE_FILE
    items = read_probe(probe)
    job.progress("probe")(0, 1, "loading the base model")
    info, base_dir, model, tokenizer = _load_base(adapter, library_dir)
    # the run's own template (--chat-template), as the adapter was trained; "" = the model's
    template = (info.manifest.get("data_settings") or {}).get("chat_template") or ""
    base = _measure(model, tokenizer, items, max_tokens, job.nested(0.0, 0.5), template)
    check_adapter_file(info.weights)  # a damaged adapter is named, not MLX's RuntimeError
    with contextlib.redirect_stdout(sys.stderr):  # (stdout may be the event stream)
        load_adapters(model, str(info.path))
    tuned = _measure(model, tokenizer, items, max_tokens, job.nested(0.5, 1.0), template)
    result = ProbeResult(adapter=info.name, base_model=str(base_dir), probe_file=str(probe),
                         probe_sha256=sha256_file(probe), max_tokens=max_tokens,
                         max_drop=max_drop, seconds=0.0)
    for item, (b_ans, b_lp), (a_ans, a_lp) in zip(items, base, tuned):
        result.items.append(ProbeItem(item.id, item.category, item.prompt, item.reference,
                                      b_ans, a_ans, b_lp, a_lp, changed=b_ans != a_ans))
    _summarise(result, _vocab_size(model))
    result.seconds = round(time.time() - t0, 2)
    return result


def _vocab_size(model) -> int:
    from mlx.utils import tree_flatten

    return max(int(v.shape[0]) for k, v in tree_flatten(model.parameters())
               if k.endswith("embed_tokens.weight"))


def _summarise(r: ProbeResult, vocab_size: int) -> None:
    """The means, the per-category figures and the verdict line, from ``r.items``."""
    n = len(r.items)
    r.base_mean_logprob = sum(i.base_logprob for i in r.items) / n
    r.adapter_mean_logprob = sum(i.adapter_logprob for i in r.items) / n
    r.logprob_drop = r.base_mean_logprob - r.adapter_mean_logprob
    r.changed = sum(i.changed for i in r.items)
    r.base_exact = sum(bool(exact_match(i.base_answer, i.reference)) for i in r.items)
    r.adapter_exact = sum(bool(exact_match(i.adapter_answer, i.reference)) for i in r.items)
    r.changed_share = r.changed / n
    for cat in dict.fromkeys(i.category for i in r.items):
        these = [i for i in r.items if i.category == cat]
        r.categories[cat] = {
            "items": len(these), "changed": sum(i.changed for i in these),
            "drop": sum(i.base_logprob - i.adapter_logprob for i in these) / len(these)}
    r.passed = r.logprob_drop <= r.max_drop
    if r.base_mean_logprob < -math.log(max(2, vocab_size)):
        # worse than a uniform guess over the vocabulary: the base never knew these answers
        r.note = (f"the base model itself finds the reference answers less likely than a "
                  f"uniform guess ({r.base_mean_logprob:.2f} < -ln {vocab_size} nats/token): "
                  "it has no general skills this probe could see being lost")
    threshold = f"{r.max_drop:.3f}" + (" = ln 2, each token half as likely"
                                       if math.isclose(r.max_drop, MAX_LOGPROB_DROP) else "")
    worst = max(r.categories.items(), key=lambda kv: kv[1]["drop"])
    r.verdict = (f"forgetting probe: {'PASSED' if r.passed else 'FLAGGED'} -- reference answers' "
                 f"log-likelihood {'fell' if r.logprob_drop > 0 else 'rose'} by "
                 f"{abs(r.logprob_drop):.3f} nats/token (threshold: a fall over "
                 f"{threshold}, flags forgetting); "
                 f"{r.changed} of {n} greedy answers changed; most affected: {worst[0]} "
                 f"({worst[1]['drop']:+.3f})")
