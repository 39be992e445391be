"""Shipped-file parity: does the file a user ships answer like the model they trained?

The run's held-out prompts (the baseline's, as training tokenized them; else a seeded sample
of the validation split in the run's chat template) go, as the same token ids, through:

(a) MLX with the adapter applied (the reference), (b) the fused model (engine/fuse.py: a
folder given, else fused now into a temporary folder), (c) every GGUF exported from this
adapter (given, else the ones the adapter's exports list names, wherever they were written,
and those whose export record names it under the library's exports and demo folders),
loaded in llama.cpp with an F32 KV cache, so the comparison measures the file.

All greedy, with the same stop tokens. For each file: the share of answers identical to (a);
for each differing answer, the first token where it diverges and whether MLX had a near-tie
there (``NEAR_TIE``). A file whose answers are the base model's instead of the adapter's is
named: "the adapter was lost" (mlx-lm#1172: a fuse that silently drops the adapter).
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..events import Job, TailorError
from ..results import ParityAnswer, ParityResult, ParityTarget
from .greedy import Greedy, first_difference, greedy, stop_ids

DEFAULT_PROMPTS = 8
DEFAULT_MAX_TOKENS = 32
# A divergence where MLX's top two tokens were within 5% of the position's largest |logit| is
# a near-tie: the rounding of a quantized type can flip it (export verification allows flips up
# to 6% for Q4_0, 4% for Q4_K_M: engine/export/verify.py). A wider gap is not rounding.
NEAR_TIE = 0.05


@dataclass
class _Prompt:
    source: str
    ids: list[int]
    text: str
    general: bool = False  # a forgetting-probe prompt topping up a small validation split


def shipped_parity(adapter: str, job: Job, *, fused: Path | str | None = None,
                   ggufs: list[Path | str] | None = None, prompts: int = DEFAULT_PROMPTS,
                   max_tokens: int = DEFAULT_MAX_TOKENS, seed: int = 0,
                   library_dir: Path | None = None) -> ParityResult:
    """Compare the fused model and every GGUF of ``adapter`` with MLX + adapter -> ParityResult.

    Raises TailorError (no such adapter, its base missing, a given file missing, a file
    llama.cpp cannot load) and Cancelled. The user's files are only read; a temporary fuse is removed."""
    from .probe import adapter_and_base

    t0 = time.time()
    if prompts < 1 or max_tokens < 1:
        raise TailorError(f"parity needs at least 1 prompt and 1 token per answer (got "
                          f"{prompts} prompts, {max_tokens} tokens)")
    info, base_dir = adapter_and_base(adapter, library_dir)
    found = check_parity_files(fused, ggufs)
    result = ParityResult(adapter=info.name, base_model=str(base_dir), max_tokens=max_tokens,
                          tie_epsilon=NEAR_TIE)
    progress = job.progress("parity", 0.0, 0.05)
    progress(0, 1, "loading the base model and the adapter")
    base, tuned, tokenizer, chosen = _reference_answers(info, base_dir, prompts, max_tokens,
                                                        seed, job)
    result.prompts = len(chosen)
    result.general_prompts = sum(p.general for p in chosen)
    if result.general_prompts:
        result.notes.append(f"{result.general_prompts} of the {len(chosen)} prompts are the "
                            "forgetting probe's general prompts: the run has only "
                            f"{len(chosen) - result.general_prompts} held-out prompts")
    result.adapter_differs_from_base = sum(b.tokens != t.tokens for b, t in zip(base, tuned))
    ref = _Reference(chosen, base, tuned, tokenizer)
    result.targets.append(_fused_target(info, fused, ref, max_tokens, job.nested(0.3, 0.6)))
    if found is None:
        found, skipped = exported_ggufs(info)
        result.notes += skipped
    for i, g in enumerate(found):
        job.cancel.raise_if_cancelled()
        span = job.nested(0.6 + 0.4 * i / len(found), 0.6 + 0.4 * (i + 1) / len(found))
        result.targets.append(_gguf_target(g, ref, max_tokens, span))
    if not found:
        result.notes.append("no GGUF exported from this adapter was found (give one with "
                            "--gguf FILE, or export with `tailor export`)")
    _verdict(result)
    result.seconds = round(time.time() - t0, 2)
    return result


def check_parity_files(fused: Path | str | None, ggufs: list[Path | str] | None
                       ) -> list[Path] | None:
    """The given GGUF paths (None: none given), each checked to exist, and the fused folder
    checked; TailorError naming the missing one (said before any work)."""
    if fused is not None and not Path(fused).expanduser().is_dir():
        raise TailorError(f"{fused}: no such fused model folder",
                          hint="give the folder `tailor fuse --out` wrote, or leave --fused out "
                               "to fuse into a temporary folder")
    found = [Path(g).expanduser() for g in ggufs] if ggufs is not None else None
    for g in found or []:
        if not g.is_file():
            raise TailorError(f"{g}: no such GGUF file",
                              hint="give the path of a .gguf file `tailor export` wrote")
    return found


@dataclass
class _Reference:
    prompts: list[_Prompt]
    base: list[Greedy]
    tuned: list[Greedy]
    tokenizer: object


def _reference_answers(info, base_dir: Path, count: int, max_tokens: int, seed: int,
                       job: Job):
    """(base answers, MLX + adapter answers with gaps, tokenizer, prompts), one model load."""
    from mlx_lm.tuner.utils import load_adapters

    from ..models import load_model
    from ..models.safetensors_check import check_adapter_file

    quant = (info.manifest.get("settings") or {}).get("quantize_base") or None
    model, tokenizer, _ = load_model(base_dir, quant)
    model.eval()
    chosen = _held_out_prompts(info, tokenizer, count, seed, job)
    stops = stop_ids(tokenizer)
    progress = job.progress("parity", 0.05, 0.3)
    base = []
    for i, p in enumerate(chosen):
        base.append(greedy(model, p.ids, max_tokens, stops, cancel=job.cancel))
        progress(i + 1, 2 * len(chosen), "the base model's answers")
    check_adapter_file(info.weights)
    with contextlib.redirect_stdout(sys.stderr):  # (stdout may be the event stream)
        load_adapters(model, str(info.path))
    model.eval()
    tuned = []
    for i, p in enumerate(chosen):
        tuned.append(greedy(model, p.ids, max_tokens, stops, gaps=True, cancel=job.cancel))
        progress(len(chosen) + i + 1, 2 * len(chosen), "MLX + adapter's answers")
    return base, tuned, tokenizer, chosen


def _held_out_prompts(info, tokenizer, count: int, seed: int, job: Job) -> list[_Prompt]:
    """The baseline's prompts (the run record's, as trained), else a seeded sample of the
    run's validation split rendered in its chat template; topped up to ``count`` with the
    forgetting probe's general prompts when the split has fewer (a shipped file must answer
    like the trained model on any prompt, and two prompts would prove little)."""
    recorded = (info.manifest.get("baseline") or {}).get("prompts") or []
    template = (info.manifest.get("data_settings") or {}).get("chat_template") or ""
    if recorded:
        chosen = [_Prompt(p["source"], list(p["prompt_tokens"]), p.get("prompt", ""))
                  for p in recorded[:count]]
    else:
        chosen, template = _validation_prompts(info, tokenizer, count, seed, job)
    if len(chosen) < count:
        from .generation import PromptRenderer
        from .probe import PROBE_FILE, read_probe

        renderer = PromptRenderer(tokenizer, chat_template=template)
        for item in read_probe()[:count - len(chosen)]:
            msgs = [{"role": "user", "content": item.prompt}]
            chosen.append(_Prompt(f"{PROBE_FILE.name}:{item.line}", renderer.prompt_ids(msgs),
                                  item.prompt, general=True))
    return chosen


def _validation_prompts(info, tokenizer, count: int, seed: int, job: Job
                        ) -> tuple[list[_Prompt], str]:
    """(a seeded sample of the validation split's prompts, the run's chat template)."""
    from .generation import PromptRenderer
    from .sources import eval_split

    try:
        split = eval_split(info, None, tokenizer, job)
    except TailorError as e:  # (the dataset moved or changed: the general prompts remain)
        job.log(f"parity without held-out prompts: {e.message}", level="warning")
        return [], (info.manifest.get("data_settings") or {}).get("chat_template") or ""
    items = [i for i in split.items if i.prompt]
    if len(items) > count:
        items = random.Random(seed).sample(items, count)
    renderer = PromptRenderer(tokenizer, chat_template=split.chat_template)
    return [_Prompt(i.source, renderer.prompt_ids(i.prompt), i.prompt[-1]["content"])
            for i in items], split.chat_template


def _fused_target(info, fused, ref: _Reference, max_tokens: int, job: Job) -> ParityTarget:
    """The fused model's answers: ``fused`` as given, else the adapter fused now (removed
    afterwards)."""
    from ..fuse import fuse_adapter
    from ..models import load_model

    with tempfile.TemporaryDirectory(prefix="tailor-parity-") as scratch:
        folder = Path(fused).expanduser() if fused is not None else None
        if folder is None:
            folder = fuse_adapter(info, Path(scratch) / "fused", job=job.nested(0.0, 0.5))
        model, _, _ = load_model(folder)
        model.eval()
        stops = stop_ids(ref.tokenizer)
        progress = job.progress("parity", 0.5, 1.0)
        answers = []
        for i, p in enumerate(ref.prompts):
            answers.append(greedy(model, p.ids, max_tokens, stops, cancel=job.cancel))
            progress(i + 1, len(ref.prompts), "the fused model's answers")
        del model
    name = f"fused model {folder}" if fused is not None else "fused model (engine/fuse.py)"
    return _compare(name, "fused", str(folder) if fused is not None else "", "", answers, ref)


def exported_ggufs(info) -> tuple[list[Path], list[str]]:
    """(every whole-model GGUF exported from this adapter, notes on those left out): the ones
    its exports list names (engine/adapter_exports.py: any folder), then, for exports older
    than that list, those whose record names it under the library's exports/ and demo/."""
    from ..adapter_exports import listed_exports

    found: list[Path] = []
    notes: list[str] = []
    seen: set[Path] = set()
    weights_time = info.weights.stat().st_mtime if info.weights.exists() else 0.0

    def consider(gguf: Path, kind: str, changed: bool = False) -> None:
        key = gguf.resolve()
        if key in seen:
            return
        seen.add(key)
        if kind == "adapter":
            notes.append(f"{gguf.name}: an adapter-only GGUF (it needs a base GGUF in "
                         "llama.cpp); not compared")
        elif changed:
            notes.append(f"{gguf}: replaced since it was exported from this adapter; "
                         "not compared")
        elif gguf.stat().st_mtime < weights_time:
            notes.append(f"{gguf.name}: older than the adapter's weights (exported from "
                         "an earlier adapter of this name?); not compared")
        else:
            found.append(gguf)

    for entry in listed_exports(info.path):
        consider(Path(entry["path"]), entry.get("kind", "model"), entry["changed"])
    for root in (paths.exports_dir(), paths.tailor_home() / "demo"):
        for record in sorted(root.rglob("*.gguf.json")) if root.is_dir() else []:
            try:
                data = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            gguf = record.with_name(record.name[:-len(".json")])
            if data.get("source") == info.name and gguf.is_file():
                consider(gguf, data.get("kind", "model"))
    return found, notes


def _gguf_target(path: Path, ref: _Reference, max_tokens: int, job: Job) -> ParityTarget:
    """The GGUF's greedy answers in llama.cpp, fed the same prompt ids."""
    record = path.with_name(path.name + ".json")
    try:
        quant = json.loads(record.read_text(encoding="utf-8")).get("quant", "")
    except (OSError, ValueError):
        quant = ""
    stops = stop_ids(ref.tokenizer)
    longest = max(len(p.ids) for p in ref.prompts)
    llm = _open_llama(path, n_ctx=longest + max_tokens + 8)
    progress = job.progress("parity")
    answers = []
    try:
        for i, p in enumerate(ref.prompts):
            job.cancel.raise_if_cancelled()
            answers.append(_llama_greedy(llm, p.ids, max_tokens, stops))
            progress(i + 1, len(ref.prompts), f"{path.name}'s answers")
    finally:
        llm.close()
    return _compare(path.name, "gguf", str(path), quant, answers, ref)


def _open_llama(path: Path, n_ctx: int):
    """llama.cpp on ``path``: every position's logits kept, an F32 KV cache (its default F16
    cache alone moves logits by ~5e-4 of their range: the file is measured, not the cache)."""
    try:
        from llama_cpp import GGML_TYPE_F32, Llama
    except ImportError:
        raise TailorError("llama-cpp-python is not installed, so GGUF files cannot be compared",
                          hint="pip install llama-cpp-python") from None
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        try:
            return Llama(str(path), n_ctx=max(64, n_ctx), logits_all=True, verbose=False,
                         n_threads=max(1, min(4, os.cpu_count() or 1)),
                         type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32)
        except (ValueError, RuntimeError, OSError) as e:
            raise TailorError(f"{path}: llama.cpp could not load it ({e})",
                              hint="re-export it with `tailor export`") from None


def _llama_greedy(llm, prompt: list[int], max_tokens: int, stops: set[int]) -> Greedy:
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    for _ in range(max_tokens):
        tok = int(llm.scores[llm.n_tokens - 1].argmax())
        if tok in stops:
            return Greedy(out, True)
        out.append(tok)
        llm.eval([tok])
    return Greedy(out, False)


def _compare(name: str, kind: str, path: str, quant: str, answers: list[Greedy],
             ref: _Reference) -> ParityTarget:
    """One file's answers against MLX + adapter's (and the base's)."""
    tok = ref.tokenizer
    target = ParityTarget(name=name, kind=kind, path=path, quant=quant, total=len(answers))
    for p, got, want, base in zip(ref.prompts, answers, ref.tuned, ref.base):
        a = ParityAnswer(prompt=p.text, source=p.source, expected=tok.decode(want.tokens),
                         answer=tok.decode(got.tokens), identical=got.tokens == want.tokens,
                         equals_base=got.tokens == base.tokens)
        at = first_difference(want.tokens, got.tokens)
        if at is not None:
            a.diverges_at = at
            a.expected_token = tok.decode([want.tokens[at]]) if at < len(want.tokens) else ""
            a.answer_token = tok.decode([got.tokens[at]]) if at < len(got.tokens) else ""
            if at < len(want.gaps):
                a.mlx_gap = want.gaps[at]
                a.near_tie = a.mlx_gap <= NEAR_TIE
        target.answers.append(a)
    target.identical = sum(a.identical for a in target.answers)
    target.share_identical = target.identical / max(1, target.total)
    target.equals_base = sum(a.equals_base for a in target.answers)
    # Lost: where the adapter changes the base's answer, this file keeps the base's more
    # often than it gives the adapter's.
    moved = [a for a, b, t in zip(target.answers, ref.base, ref.tuned) if b.tokens != t.tokens]
    target.adapter_lost = bool(moved) and \
        sum(a.equals_base for a in moved) > sum(a.identical for a in moved)
    return target


FLOAT_TYPES = ("", "f32", "f16", "bf16")  # "": the fused folder


def _verdict(r: ParityResult) -> None:
    """PASSED, DIFFERS (a quantized file's rounding flips clear winners) or FAILED (an adapter
    lost, or a full-precision file that does not compute what MLX does)."""
    lost = [t.name for t in r.targets if t.adapter_lost]
    unexplained = [t for t in r.targets if not t.adapter_lost and
                   any(not a.identical and not a.near_tie for a in t.answers)]
    exact = [t.name for t in unexplained if t.quant.lower() in FLOAT_TYPES]
    rounded = [t.name for t in unexplained if t.quant.lower() not in FLOAT_TYPES]
    r.passed = not lost and not unexplained
    parts = []
    if lost:
        parts.append("the adapter was lost in " + ", ".join(lost))
    if exact:
        parts.append("answers diverge where MLX had no near-tie in " + ", ".join(exact)
                     + " (a full-precision file should compute what MLX does)")
    if rounded:
        parts.append(", ".join(rounded) + ": the type's rounding changes answers where MLX had "
                     "no near-tie (a higher-precision type, e.g. Q8_0 or F16, stays closer)")
    head = "PASSED" if r.passed else ("FAILED" if lost or exact else "DIFFERS")
    head += "".join(f" -- {p}" for p in parts)
    shares = ", ".join(f"{t.name} {t.identical}/{t.total}" for t in r.targets)
    held = r.prompts - r.general_prompts
    which = f"{r.prompts} held-out prompts" if not r.general_prompts else \
        f"{r.prompts} prompts ({held} held-out, {r.general_prompts} general)"
    r.verdict = (f"shipped-file parity: {head}; identical greedy answers to MLX + adapter on "
                 f"{which}: {shares} (near-tie: top-2 gap within {NEAR_TIE:.0%} of the logit "
                 "range)")
    if r.adapter_differs_from_base == 0:
        r.notes.append("the adapter's answers equal the base's on these prompts, so a lost "
                       "adapter cannot be told apart here")
