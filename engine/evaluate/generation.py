"""Batched greedy generation with a KV cache, token for token equal to one-at-a-time greedy.

Several prompts go through the model in one forward pass: mlx-lm's ``BatchGenerator`` keeps
one batched KV cache (``BatchKVCache``: left-padded rows, a per-row position offset for RoPE
and a mask that hides each row's padding), so every row sees exactly the keys and positions
it would see alone. What this module adds: prompts sorted by length (less padding, fewer
wasted columns), progress through ``job.progress``, a stop check between decoding steps, and
the answers back in the caller's order with their token ids.

API (stable; others build on it)::

    from engine.evaluate.generation import Answer, PromptRenderer, greedy_answers

    renderer = PromptRenderer(tokenizer, chat_template="")   # the run's template, "" = model's
    prompts = [renderer.prompt_ids([{"role": "user", "content": "2+2?"}]), ...]
    answers = greedy_answers(model, tokenizer, prompts, max_tokens=64, batch_size=8, job=job)
    answers[i].text          # the decoded answer, without the stop token
    answers[i].token_ids     # the generated ids, without the stop token
    answers[i].finish_reason # "stop" (an end-of-turn / eos token) or "length" (max_tokens)

``greedy_answers(model, tokenizer, prompts: Sequence[Sequence[int]], *, max_tokens: int = 128,
batch_size: int = 8, job: Job | None = None, stage: str = "generate",
stop_ids: Iterable[int] | None = None) -> list[Answer]``: ``model`` is an mlx-lm model (with
or without adapters applied), ``tokenizer`` mlx-lm's TokenizerWrapper (its ``eos_token_ids``
stop generation unless ``stop_ids`` is given). Raises ``Cancelled`` when ``job.cancel`` is set
(checked before every decoding step) and TailorError for an empty prompt or bad sizes.

Equality with one-at-a-time greedy (``mlx_lm.generate.generate_step`` on the same ids) holds
exactly on the fixture models (tests/evaluate/test_generation.py, every architecture); on a
real model in bf16 a batched matmul can round differently from a single-row one, so two
answers may part at a near-tie (two tokens within rounding of each other).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..events import Job, TailorError

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class Answer:
    """One greedy answer: its text and ids (neither includes the stop token)."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "stop"  # "stop" | "length"


def greedy_answers(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], *,
                   max_tokens: int = 128, batch_size: int = DEFAULT_BATCH_SIZE,
                   job: Job | None = None, stage: str = "generate",
                   stop_ids: Iterable[int] | None = None) -> list[Answer]:
    """The greedy answer to each prompt (token ids, already templated), in ``prompts``' order.

    ``batch_size`` prompts decode together; progress reports answers finished out of
    ``len(prompts)``. See the module docstring for the exact contract."""
    if max_tokens < 1:
        raise TailorError(f"max_tokens must be 1 or more, not {max_tokens}")
    if batch_size < 1:
        raise TailorError(f"batch_size must be 1 or more, not {batch_size}")
    prompts = [list(map(int, p)) for p in prompts]
    for i, p in enumerate(prompts):
        if not p:
            raise TailorError(f"prompt {i + 1} is empty: there is nothing to answer")
    if not prompts:
        return []
    job = job or Job("generate")
    run = _Decoding(model, prompts, max_tokens,
                    sorted(set(stop_ids if stop_ids is not None else tokenizer.eos_token_ids)),
                    job, job.progress(stage))
    # Longest first: a batch holds prompts of similar length, so little padding is computed,
    # and the longest batch (the memory peak) comes first, where a failure costs least.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    run.progress(0, len(prompts), f"0 of {len(prompts)} answers")
    start = 0
    while start < len(order):
        chunk = order[start:start + batch_size]
        try:
            run.decode(chunk)
        except ValueError as e:
            # mlx-lm's Gemma 2 attention cannot broadcast a batched mask over its grouped
            # heads ("[broadcast_shapes]"): such a model answers one prompt at a time.
            if len(chunk) == 1 or "broadcast" not in str(e):
                raise
            job.log(f"{type(model).__module__.rsplit('.', 1)[-1]}: mlx-lm cannot run this "
                    "architecture in batches; answering one prompt at a time", "warning")
            batch_size = 1
            for i in chunk:
                run.tokens[i], run.reasons[i] = [], "length"
            continue
        start += len(chunk)
    return [Answer(tokenizer.decode(t), t, run.reasons[i]) for i, t in enumerate(run.tokens)]


class _Decoding:
    """The answers so far of one greedy_answers call, decoded one batch at a time."""

    def __init__(self, model, prompts, max_tokens, stops, job, progress):
        self.model, self.prompts, self.max_tokens, self.stops = model, prompts, max_tokens, stops
        self.job, self.progress = job, progress
        self.tokens: list[list[int]] = [[] for _ in prompts]
        self.reasons: list[str] = ["length"] * len(prompts)
        self.done = 0

    def decode(self, chunk: list[int]) -> None:
        """Answer the prompts ``chunk`` (indices) together, in one batched KV cache."""
        import mlx.core as mx
        from mlx_lm.generate import BatchGenerator

        self.job.cancel.raise_if_cancelled()
        gen = BatchGenerator(self.model, max_tokens=self.max_tokens,
                             stop_tokens=[[t] for t in self.stops],
                             completion_batch_size=len(chunk), prefill_batch_size=len(chunk))
        total = len(self.prompts)
        try:
            uid_of = dict(zip(gen.insert([self.prompts[i] for i in chunk]), chunk))
            while responses := gen.next_generated():
                for r in responses:
                    i = uid_of[r.uid]
                    if r.finish_reason == "stop":
                        self.reasons[i] = "stop"
                    else:
                        self.tokens[i].append(int(r.token))
                    if r.finish_reason is not None:
                        self.done += 1
                        self.progress(self.done, total, f"{self.done} of {total} answers")
                self.job.cancel.raise_if_cancelled()
        finally:
            gen.close()
            mx.clear_cache()


def reference_greedy_answer(model: Any, tokenizer: Any, prompt: Sequence[int], *,
                            max_tokens: int = 128, stop_ids: Iterable[int] | None = None
                            ) -> Answer:
    """One prompt alone through mlx-lm's own ``generate_step`` (the yardstick the batched
    answers are tested against, and the one-at-a-time path of bench/eval_speed.py)."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    stops = set(stop_ids if stop_ids is not None else tokenizer.eos_token_ids)
    ids: list[int] = []
    reason = "length"
    for token, _ in generate_step(mx.array(list(prompt)), model, max_tokens=max_tokens):
        token = int(token)
        if token in stops:
            reason = "stop"
            break
        ids.append(token)
    return Answer(tokenizer.decode(ids), ids, reason)


class PromptRenderer:
    """Prompt token ids for generation from chat messages, rendered with the run's chat template
    by Tailor's bounded renderer (engine/data/render.py), so base, adapter, fused model and GGUF
    all get the same text. ``chat_template`` "" uses the model's own (as training does)."""

    def __init__(self, tokenizer: Any, chat_template: str = "", max_tokens: int | None = None):
        from ..data.render import Renderer

        self.tokenizer = tokenizer
        self.renderer = Renderer(tokenizer, chat_template=chat_template or "",
                                 max_tokens=max_tokens)

    @property
    def has_template(self) -> bool:
        return bool(self.renderer.template_source)

    def prompt_text(self, messages: list[dict]) -> str:
        """The text the model continues: the conversation up to the assistant's turn."""
        if not self.has_template:  # a base model without a template: plain continuation
            return "\n\n".join(m["content"] for m in messages)
        return self.renderer.render_prompt(messages)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        text = self.prompt_text(messages)
        # The template writes BOS itself where the family has one; plain text gets the
        # tokenizer's own (as training's text examples do).
        return list(self.tokenizer.encode(text, add_special_tokens=not self.has_template))
