"""The chat template runs sandboxed; tokenizers of every kind are accepted."""
from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from engine.data import DataConfig, prepare_dataset
from engine.data.render import Renderer
from engine.events import TailorError
from tests.data.conftest import chat, jsonl


def test_template_cannot_escape_the_sandbox(write, tokenizer, tmp_path):
    marker = tmp_path / "pwned"
    evil = ("{{ ''.__class__.__mro__[1].__subclasses__() }}"
            "{{ cycler.__init__.__globals__.os.system('touch " + str(marker) + "') }}"
            "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    path = write("x.jsonl", jsonl([chat(i) for i in range(3)]))
    with pytest.raises(TailorError) as err:
        prepare_dataset(path, tokenizer(), DataConfig(chat_template=evil))
    assert "x.jsonl: no training examples left after skipping bad ones" in str(err.value)
    assert ("x.jsonl:1: the model's chat template refused this conversation: access to "
            "attribute '__class__' of 'str' object is unsafe") in str(err.value)
    assert not marker.exists()


def test_template_syntax_error_names_the_template_line(write, tokenizer):
    path = write("x.jsonl", jsonl([chat(i) for i in range(3)]))
    with pytest.raises(TailorError, match="chat template line 2: "):
        prepare_dataset(path, tokenizer(), DataConfig(chat_template="ok\n{% for %}"))


def test_template_from_a_file(write, tokenizer):
    template = write("tmpl.jinja", "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}"
                                   "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
                                   "{{ ' | ' }}{% endfor %}")
    path = write("x.jsonl", jsonl([chat(i) for i in range(3)]))
    prepared = prepare_dataset(path, tokenizer(), DataConfig(chat_template=str(template),
                                                             preview_count=1))
    assert prepared.report.preview[0].segments == [
        ("[user] Question number 0? | [assistant] ", False),
        ("Answer number 0.<|im_end|>", True), (" | ", False)]
    assert prepared.chat_template == template.read_text()


def test_model_without_chat_template(write, tiny_model):
    hf = AutoTokenizer.from_pretrained(str(tiny_model("llama3")))
    hf.chat_template = None
    with pytest.raises(TailorError, match="the model has no chat template") as err:
        prepare_dataset(write("c.jsonl", jsonl([chat(i) for i in range(3)])), hf)
    assert "--chat-template" in err.value.hint
    # Plain text needs no template.
    texts = jsonl([{"text": f"line {i}"} for i in range(3)])
    assert len(prepare_dataset(write("t.jsonl", texts), hf).train) == 2


def test_transformers_tokenizer_and_mlx_wrapper_give_the_same_result(write, tokenizer,
                                                                     tiny_model):
    path = write("x.jsonl", jsonl([chat(i) for i in range(8)]))
    hf = AutoTokenizer.from_pretrained(str(tiny_model("gemma")))
    a = prepare_dataset(path, tokenizer("gemma"))
    b = prepare_dataset(path, hf)
    assert [(e.tokens, e.loss_mask) for e in a.train] == [(e.tokens, e.loss_mask) for e in b.train]


class SlowTokenizer:
    """A tokenizer without offsets (like transformers' slow, pure-Python ones)."""

    is_fast = False

    def __init__(self, hf):
        self.hf = hf
        self.chat_template = hf.chat_template
        self.eos_token, self.eos_token_id = hf.eos_token, hf.eos_token_id
        self.bos_token = hf.bos_token
        self.all_special_tokens = hf.all_special_tokens

    def encode(self, text, add_special_tokens=True):
        return self.hf.encode(text, add_special_tokens=add_special_tokens)


@pytest.mark.parametrize("kind", ["qwen2", "llama3"])
def test_slow_tokenizer_fallback_matches_the_fast_path(write, tiny_model, kind):
    hf = AutoTokenizer.from_pretrained(str(tiny_model(kind)))
    path = write("x.jsonl", jsonl([chat(i) for i in range(6)]))
    fast = prepare_dataset(path, hf)
    slow = prepare_dataset(path, SlowTokenizer(hf))
    assert Renderer(SlowTokenizer(hf)).fast is False
    assert [(e.tokens, e.loss_mask) for e in slow.train] == \
        [(e.tokens, e.loss_mask) for e in fast.train]


def test_generation_tags_and_turns_without_end_token(write, tokenizer):
    # Some templates wrap assistant text in {% generation %}; this one also has no end token,
    # so a turn is trained up to where the next one starts.
    template = ("{% for m in messages %}{% if m['role'] == 'assistant' %}"
                "{% generation %}A: {{ m['content'] }}{% endgeneration %}"
                "{% else %}Q: {{ m['content'] }}{% endif %}{{ '\\n' }}{% endfor %}"
                "{% if add_generation_prompt %}A: {% endif %}")
    rows = [{"messages": [{"role": "user", "content": "one?"},
                          {"role": "assistant", "content": "1."},
                          {"role": "user", "content": "two?"},
                          {"role": "assistant", "content": "2."}]}] * 1 + [chat(1)]
    prepared = prepare_dataset(write("g.jsonl", jsonl(rows)), tokenizer("qwen2"),
                               DataConfig(chat_template=template, preview_count=1,
                                          valid_fraction=0))
    assert prepared.report.preview[0].marked_text == "Q: one?\nA: ⟦1.⟧\nQ: two?\nA: ⟦2.⟧\n"


def test_plain_text_line_endings_are_normalised(write, tokenizer):
    prepared = prepare_dataset(write("w.txt", b"one\r\nline two\r\n\r\nthree\r\n"), tokenizer(),
                               DataConfig(valid_fraction=0, preview_count=1))
    assert prepared.report.preview[0].segments[0][0] == "one\nline two"


def test_missing_template_file(write, tokenizer):
    path = write("x.jsonl", jsonl([chat(i) for i in range(3)]))
    with pytest.raises(TailorError, match="nope.jinja: chat template file not found"):
        prepare_dataset(path, tokenizer(), DataConfig(chat_template="nope.jinja"))
