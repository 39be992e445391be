"""The preference schema (prompt/chosen/rejected, TRL conventions): detection, rendering of
both sides with only the answer trained, and every bad input named as file:line with the file
left byte for byte as it was (sha256)."""
from __future__ import annotations

import hashlib
import json

import pytest

from engine.data import DataConfig, prepare_dataset
from engine.data.schemas import detect_schema
from engine.events import TailorError
from tests.data.conftest import jsonl


def pair(i: int, **kw) -> dict:
    return {"prompt": f"Question number {i}?", "chosen": f"A polite answer {i}.",
            "rejected": f"Go away {i}.", **kw}


GOOD = [json.dumps(pair(i)) for i in range(4)]
U = {"role": "user", "content": "Hi?"}
A = {"role": "assistant", "content": "Hello."}


def lines(*bad) -> bytes:
    """Two good pairs, the bad line(s) from line 3 on, two good pairs."""
    bad = [b if isinstance(b, str) else json.dumps(b) for b in bad]
    return ("\n".join(GOOD[:2] + bad + GOOD[2:]) + "\n").encode()


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


CASES = [
    # (id, bytes, expected message (after "p.jsonl:"), "problem" | "fatal", config overrides)
    ("missing chosen", lines({"prompt": "a", "rejected": "b"}),
     "3: missing field 'chosen'", "problem", {}),
    ("missing rejected", lines({"prompt": "a", "chosen": "b"}),
     "3: missing field 'rejected'", "problem", {}),
    ("missing prompt", lines({"chosen": "a", "rejected": "b"}),
     "3: missing field 'prompt'", "problem", {}),
    ("identical sides", lines({"prompt": "a", "chosen": "same", "rejected": "same "}),
     "3: chosen and rejected are identical", "problem", {}),
    ("empty chosen", lines({"prompt": "a", "chosen": "  ", "rejected": "b"}),
     "3: field 'chosen' is empty", "problem", {}),
    ("empty prompt", lines({"prompt": "", "chosen": "a", "rejected": "b"}),
     "3: field 'prompt' is empty", "problem", {}),
    ("chosen a number", lines({"prompt": "a", "chosen": 5, "rejected": "b"}),
     "3: field 'chosen' must be a string or an array of messages, found a number", "problem",
     {}),
    ("prompt an object", lines({"prompt": {"x": 1}, "chosen": "a", "rejected": "b"}),
     "3: field 'prompt' must be a string or an array of messages, found an object", "problem",
     {}),
    ("rejected ends with a user turn", lines({"prompt": [U], "chosen": [A], "rejected": [U]}),
     "3: field 'rejected' must end with an assistant turn (its last message is 'user')",
     "problem", {}),
    ("prompt ends with an assistant turn", lines({"prompt": [U, A], "chosen": [A],
                                                  "rejected": [{"role": "assistant",
                                                                "content": "No."}]}),
     "3: the prompt's messages end with an assistant turn", "problem", {}),
    ("message without content", lines({"prompt": [{"role": "user"}], "chosen": "a",
                                       "rejected": "b"}),
     "3: prompt[0]: missing field 'content'", "problem", {}),
    ("unknown role", lines({"prompt": [{"role": "robot", "content": "x"}], "chosen": "a",
                            "rejected": "b"}),
     "3: prompt[0]: unknown role 'robot'", "problem", {}),
    ("empty message list", lines({"prompt": "a", "chosen": [], "rejected": "b"}),
     "3: field 'chosen' is empty", "problem", {}),
    ("system twice", lines({"system": "S", "prompt": [{"role": "system", "content": "T"}, U],
                            "chosen": "a", "rejected": "b"}),
     "3: a system prompt is given twice", "problem", {}),
    ("system not a string", lines(pair(9, system=3)),
     "3: field 'system' must be a string, found a number", "problem", {}),
    ("chosen content a number", lines({"prompt": "a", "chosen": [{"role": "assistant",
                                                                  "content": 1}],
                                       "rejected": "b"}),
     "3: chosen[0].content must be a string, found a number", "problem", {}),
    ("side too long after templating", lines(pair(9, rejected="word " * 200)),
     "3: the rejected side is", "problem", {"too_long": "drop", "max_seq_length": 64}),
    ("prompt longer than the limit", lines(pair(9, prompt="word " * 200)),
     "3: the prompt is", "problem", {"max_seq_length": 64}),
    ("mixed schemas", lines(json.dumps({"messages": [U, A]})),
     "3: this example is in the chat format but the dataset is preference", "fatal", {}),
    ("all bad", jsonl([{"prompt": "a", "chosen": "x", "rejected": "x"}] * 3),
     "1: chosen and rejected are identical", "fatal", {}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_preference_input_is_named_and_the_file_unchanged(write, tokenizer, case):
    _id, data, expected, kind, overrides = case
    path = write("p.jsonl", data)
    before = sha(path)
    tok = tokenizer("qwen2")
    if kind == "fatal":
        with pytest.raises(TailorError) as err:
            prepare_dataset(path, tok, DataConfig(**overrides))
        assert f"p.jsonl:{expected}" in str(err.value)
    else:
        prepared = prepare_dataset(path, tok, DataConfig(**overrides))
        problems = [str(p) for p in prepared.report.errors]
        assert any(f"p.jsonl:{expected}" in p for p in problems), problems
        assert len(prepared.train) + len(prepared.valid) == 4  # the good pairs are kept
        with pytest.raises(TailorError) as err:
            prepare_dataset(path, tok, DataConfig(**{**overrides, "strict": True}))
        assert f"p.jsonl:{expected}" in str(err.value)
    assert sha(path) == before, "the input was modified"


def test_string_and_message_pairs_are_detected_and_only_the_answers_trained(write, tokenizer):
    assert detect_schema(pair(0)) == "preference"
    convo = {"prompt": [U, A, {"role": "user", "content": "And then?"}],
             "chosen": [{"role": "assistant", "content": "Then we talk."}],
             "rejected": [{"role": "assistant", "content": "Nothing."}], "system": "Be kind."}
    path = write("p.jsonl", jsonl([pair(i) for i in range(5)] + [convo]))
    tok = tokenizer("qwen2")
    prepared = prepare_dataset(path, tok, DataConfig(valid_fraction=0.0, preview_count=6))
    assert prepared.schema == "preference" and len(prepared.train) == 6
    last = next(p for p in prepared.train if p.source.endswith(":6"))
    for side, answer in (("chosen", "Then we talk."), ("rejected", "Nothing.")):
        ex = getattr(last, side)
        trained = tok.decode([t for t, m in zip(ex.tokens, ex.loss_mask) if m])
        # the prompt's earlier assistant turn ("Hello.") is context, never scored
        assert trained.startswith(answer) and "Hello." not in trained, trained
        assert "Be kind." in tok.decode(ex.tokens)
    # chosen and rejected share the prompt, token for token
    n = last.chosen.loss_mask.index(1)
    assert last.chosen.tokens[:n] == last.rejected.tokens[:n]
    sources = [p.source for p in prepared.report.preview]
    assert sources[:2] == ["p.jsonl:1 (chosen)", "p.jsonl:1 (rejected)"]
    trained_text = "".join(t for t, on in prepared.report.preview[1].segments if on)
    assert trained_text.startswith("Go away 0.")
