"""Prompt masking on real chat templates: the trained span of every assistant turn is exactly
its content plus the end-of-turn token, and the tokens are the template's own rendering."""
from __future__ import annotations

import pytest

from engine.data import DataConfig, prepare_dataset
from engine.tiny_models import SPECS
from tests.data.conftest import jsonl

CONVERSATION = [
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue is nice."},
    {"role": "user", "content": "Another one?"},
    {"role": "assistant", "content": "Green, of course! 🙂"},
]

# What each family trains for one assistant turn: content, then its end-of-turn token.
# Llama 2 renders ' ' + content + ' ' + '</s>': SentencePiece makes the leading space part of
# the first content token ('▁Blue') and keeps the space before </s> as its own token.
EXPECTED = {
    "qwen2": "{}<|im_end|>",
    "llama2": " {} </s>",
    "gemma": "{}<end_of_turn>",
    "llama3": "{}<|eot_id|>",
    "phi3": "{}<|end|>",
    "qwen3": "{}<|im_end|>",
}


def trained_runs(example) -> list[list[int]]:
    runs, current = [], []
    for token, m in zip(example.tokens, example.loss_mask):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("kind", list(EXPECTED))
def test_trained_span_is_assistant_content_plus_end_token(kind, write, tokenizer):
    tok = tokenizer(kind)
    hf = tok._tokenizer
    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[:2]}]
    prepared = prepare_dataset(write(f"{kind}.jsonl", jsonl(rows)), tok,
                               DataConfig(valid_fraction=0, preview_count=2))
    example = prepared.train[0]

    # The tokens are exactly what the model's chat template makes of the conversation.
    assert example.tokens == list(hf.apply_chat_template(CONVERSATION, tokenize=True,
                                                         return_dict=False))
    # Two trained runs, one per assistant turn, each ending on the end-of-turn token.
    runs = trained_runs(example)
    end_id = hf.convert_tokens_to_ids(SPECS[kind].eos_token)
    assert len(runs) == 2
    assert [run[-1] for run in runs] == [end_id, end_id]

    # Character level: the trained text is the content plus the end token, nothing else.
    segments = prepared.report.preview[0].segments
    trained = [text for text, is_trained in segments if is_trained]
    assert trained == [EXPECTED[kind].format(m["content"]) for m in CONVERSATION[1::2]]
    assert "".join(text for text, _ in segments) == hf.apply_chat_template(
        CONVERSATION, tokenize=False)
    # ...and decoding the trained tokens gives back that text.
    for run, text in zip(runs, trained):
        assert hf.decode(run).strip() == text.strip()


def test_system_turn_folded_when_the_template_has_no_system_role(write, tokenizer):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}] + CONVERSATION[:2]}] * 1 + \
           [{"messages": CONVERSATION}]
    prepared = prepare_dataset(write("g.jsonl", jsonl(rows)), tokenizer("gemma"),
                               DataConfig(valid_fraction=0, preview_count=1))
    text = prepared.report.preview[0].marked_text
    assert "<start_of_turn>user\nBe brief.\n\nName a colour.<end_of_turn>" in text
    assert "⟦Blue is nice.<end_of_turn>⟧" in text
    assert any("merged into the first user turn" in n for n in prepared.report.notes)


def test_completion_masks_the_prompt_and_text_trains_everything(write, tokenizer):
    tok = tokenizer("llama3")
    rows = [{"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(1, i + 2)))}
            for i in range(4)]
    prepared = prepare_dataset(write("c.jsonl", jsonl(rows)), tok,
                               DataConfig(valid_fraction=0, preview_count=1))
    trained = [t for t, m in prepared.report.preview[0].segments if m]
    assert trained == ["1<|eot_id|>"]

    texts = [{"text": f"Line {i} of plain text."} for i in range(3)]
    prepared = prepare_dataset(write("t.jsonl", jsonl(texts)), tok, DataConfig(valid_fraction=0))
    ex = prepared.train[0]
    assert all(ex.loss_mask)
    assert ex.tokens[0] == tok.bos_token_id and ex.tokens[-1] == tok.eos_token_id


def test_mask_prompt_off_trains_every_token(write, tokenizer):
    rows = [{"messages": CONVERSATION}] * 1 + [{"messages": CONVERSATION[:2]}]
    prepared = prepare_dataset(write("m.jsonl", jsonl(rows)), tokenizer("qwen2"),
                               DataConfig(valid_fraction=0, mask_prompt=False))
    assert all(all(e.loss_mask) for e in prepared.train)


def test_preview_segments_rebuild_the_rendering(write, tokenizer):
    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[:2]}]
    prepared = prepare_dataset(write("p.jsonl", jsonl(rows)), tokenizer("qwen2"),
                               DataConfig(valid_fraction=0, preview_count=5))
    report = prepared.report
    assert [p.source for p in report.preview] == ["p.jsonl:1", "p.jsonl:2"]
    marked = report.preview[1].marked_text
    assert marked.endswith("<|im_start|>assistant\n⟦Blue is nice.<|im_end|>⟧\n")
    as_dict = report.to_dict()["preview"][0]
    assert as_dict["segments"][0] == [report.preview[0].segments[0][0], False]
    assert "⟦Green, of course! 🙂<|im_end|>⟧" in report.format_text()
