"""Batched greedy generation (engine/evaluate/generation.py) answers exactly what mlx-lm's
one-at-a-time greedy generation answers, on every fixture architecture."""
from __future__ import annotations

import pytest

from engine.events import Cancelled, Job, ListReporter, Progress
from engine.evaluate.generation import (Answer, PromptRenderer, greedy_answers,
                                        reference_greedy_answer)
from engine.models import load_model

QUESTIONS = ["What is two plus two?", "Hi", "x",
             "Name a colour of the sea and one of the sky, please, in one word each.",
             "Tell me a story about a horse and a river", "Why is water wet?",
             "A much longer question, so that this batch pads the short ones a lot: which "
             "animal lives in the mountain near the river, and what does it eat at night?"]


def _varied(model):
    """The fixture's embeddings scaled down (as real initialisations are, and as the demo's
    model is built): with the peaked ones, tied-embedding models repeat one token forever,
    and equal answers would prove little."""
    from mlx.utils import tree_flatten, tree_unflatten

    model.update(tree_unflatten([(k, v * 0.1) for k, v in tree_flatten(model.parameters())
                                 if "embed_tokens" in k]))
    return model


def _prompts(tokenizer):
    renderer = PromptRenderer(tokenizer)
    return [renderer.prompt_ids([{"role": "user", "content": q}]) for q in QUESTIONS]


def test_batched_equals_one_at_a_time(any_tiny_model):
    kind, folder = any_tiny_model
    model, tokenizer, _ = load_model(folder)
    _varied(model)
    prompts = _prompts(tokenizer)
    assert len({len(p) for p in prompts}) > 3  # batches of mixed lengths: padding is exercised
    # batch_size 3 over 7 prompts: full batches and a partial last one
    batched = greedy_answers(model, tokenizer, prompts, max_tokens=20, batch_size=3)
    alone = [reference_greedy_answer(model, tokenizer, p, max_tokens=20) for p in prompts]
    assert [a.token_ids for a in batched] == [a.token_ids for a in alone]
    assert [a.finish_reason for a in batched] == [a.finish_reason for a in alone]
    assert [a.text for a in batched] == [a.text for a in alone]
    assert len({tuple(a.token_ids) for a in batched}) >= 3  # not one answer for everything
    assert all(a.token_ids for a in batched)


def test_stops_at_a_stop_token_and_leaves_it_out(tiny_model):
    model, tokenizer, _ = load_model(tiny_model("llama2"))
    prompts = _prompts(tokenizer)
    free = greedy_answers(model, tokenizer, prompts, max_tokens=12, batch_size=4, stop_ids=[])
    stop = free[0].token_ids[3]  # a token the first answer produces: it must end there
    answers = greedy_answers(model, tokenizer, prompts, max_tokens=12, batch_size=4,
                             stop_ids=[stop])
    assert answers[0].token_ids == free[0].token_ids[:free[0].token_ids.index(stop)]
    assert answers[0].finish_reason == "stop"
    for a, f in zip(answers, free):
        assert stop not in a.token_ids
        if stop not in f.token_ids:
            assert a.token_ids == f.token_ids and a.finish_reason == "length"
    alone = [reference_greedy_answer(model, tokenizer, p, max_tokens=12, stop_ids=[stop])
             for p in prompts]
    assert [a.token_ids for a in answers] == [a.token_ids for a in alone]


def test_progress_and_cancel(tiny_model):
    model, tokenizer, _ = load_model(tiny_model("qwen2"))
    prompts = _prompts(tokenizer)
    events = ListReporter()
    job = Job("eval", events)
    greedy_answers(model, tokenizer, prompts, max_tokens=8, batch_size=2, job=job)
    done = [e.done for e in events.of(Progress)]
    assert done[0] == 0 and done[-1] == 1000 and done == sorted(done)
    assert len(done) == len(prompts) + 1  # one step per finished answer

    steps = []

    def stop_after_two(event):
        steps.append(event)
        if len(steps) == 2:
            job.cancel.cancel()

    job = Job("eval", stop_after_two)
    with pytest.raises(Cancelled):
        greedy_answers(model, tokenizer, prompts, max_tokens=8, batch_size=2, job=job)


def test_bad_arguments(tiny_model):
    from engine.events import TailorError

    model, tokenizer, _ = load_model(tiny_model("qwen2"))
    assert greedy_answers(model, tokenizer, []) == []
    with pytest.raises(TailorError, match="prompt 2 is empty"):
        greedy_answers(model, tokenizer, [[1, 2], []])
    with pytest.raises(TailorError, match="max_tokens"):
        greedy_answers(model, tokenizer, [[1, 2]], max_tokens=0)
    assert isinstance(greedy_answers(model, tokenizer, [[1, 2]], max_tokens=2)[0], Answer)


def test_prompt_renderer_uses_the_runs_template_as_training_renders(tiny_model):
    from engine.data.render import Renderer
    from engine.models.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tiny_model("gemma"))
    renderer = PromptRenderer(tokenizer)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = renderer.prompt_text(msgs)  # Gemma's template has no system role: folded, as trained
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    assert text == Renderer(tokenizer).render_prompt(msgs)
    ids = renderer.prompt_ids(msgs)
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert ids.count(tokenizer.bos_token_id) == 1  # the template's BOS, not a second one
    # a run's own template (--chat-template) wins over the model's
    own = PromptRenderer(tokenizer, "{% for m in messages %}[{{ m['content'] }}]{% endfor %}>")
    assert own.prompt_text([{"role": "user", "content": "Hi"}]) == "[Hi]>"


@pytest.mark.parametrize("kind", ["llama3", "llama2", "qwen2", "qwen3", "gemma", "phi3",
                                  "gemma2", "gemma3"])
def test_held_out_prompts_are_the_tokens_training_saw_before_the_answer(kind, tiny_model,
                                                                        tmp_path):
    """The prompt an evaluation renders is, token for token, what preceded the trained answer
    in training, on every fixture family's template and tokenizer."""
    from engine.data import DataConfig, prepare_dataset
    from engine.evaluate.sources import _examples_by_source, _held_out
    from engine.models.tokenizer import load_tokenizer
    from tests.train.conftest import write_toy_chat

    data = write_toy_chat(tmp_path / "toy.jsonl", n=12)
    tokenizer = load_tokenizer(tiny_model(kind))
    cfg = DataConfig(preview_count=0)
    prepared = prepare_dataset(data, tokenizer, cfg)
    items = _held_out(prepared.train + prepared.valid, _examples_by_source(data, cfg))
    renderer = PromptRenderer(tokenizer)
    assert len(items) == 12 and all(i.prompt for i in items)
    for i in items:
        assert renderer.prompt_ids(i.prompt) == i.tokens[:i.loss_mask.index(1)], i.source
