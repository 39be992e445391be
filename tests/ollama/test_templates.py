"""Jinja chat template → Ollama Go template: for each family the Go template, rendered for a
two-turn conversation, gives exactly the prompt the model's own Jinja template gives, and the
stops hold the turn-end token.

The Go side is rendered with engine.ollama.gotemplate, which test_gotemplate.py checks against
Ollama's own library templates with expected strings written by hand.
"""
from __future__ import annotations

import pytest

from engine.ollama.gotemplate import parse
from engine.ollama.templates import (chat_template_to_ollama, convert_chat_template,
                                     go_messages, jinja_renderer, read_hf_chat_info)
from engine.tiny_models import (CHATML_TEMPLATE, GEMMA_TEMPLATE, LLAMA2_TEMPLATE,
                                LLAMA3_TEMPLATE, PHI3_TEMPLATE, SPECS)

SYSTEM = {"role": "system", "content": "Answer like a pirate."}
TWO_TURNS = [{"role": "user", "content": "What is 2 + 2?"},
             {"role": "assistant", "content": "Four, matey."},
             {"role": "user", "content": "And 3 + 3?"}]

# family -> (jinja template, tokenizer info, model kind for the turn-end token)
FAMILIES = {
    "chatml": (CHATML_TEMPLATE, {"eos_token": "<|im_end|>"}, "qwen2"),
    "llama3": (LLAMA3_TEMPLATE, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
                                 "add_bos_token": True}, "llama3"),
    "llama2": (LLAMA2_TEMPLATE, {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True},
               "llama2"),
    "gemma": (GEMMA_TEMPLATE, {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True,
                               "extra_eos_tokens": ["<end_of_turn>"]}, "gemma"),
    "phi3": (PHI3_TEMPLATE, {"bos_token": "<s>", "eos_token": "<|endoftext|>",
                             "extra_eos_tokens": ["<|end|>"]}, "phi3"),
}

# Not any real family: roles in brackets, a fixed preamble, turns closed by <|stop|>.
UNKNOWN_TEMPLATE = (
    "{{ 'CONVERSATION LOG\n' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '[[context]] ' + message['content'] + '<|stop|>\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[[human]] ' + message['content'] + '<|stop|>\n' }}"
    "{% else %}{{ '[[bot]] ' + message['content'] + '<|stop|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '[[bot]] ' }}{% endif %}"
)


def both(jinja: str, info: dict, messages: list[dict], merge_system: bool = False):
    go_template, stops = chat_template_to_ollama(jinja, info)
    go_text = parse(go_template).render(go_messages(messages))
    jinja_messages = messages
    if merge_system and messages[0]["role"] == "system":
        # No system role in this family: the system text opens the first user turn.
        first = dict(messages[1], content=messages[0]["content"] + "\n\n" + messages[1]["content"])
        jinja_messages = [first, *messages[2:]]
    jinja_text = jinja_renderer(jinja, convert_info(info))(jinja_messages, True)
    return go_text, jinja_text, stops


def convert_info(info):
    from engine.ollama.templates import TokenizerInfo

    return TokenizerInfo.coerce(info)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("with_system", [False, True])
def test_family_two_turns_match_jinja(family, with_system):
    jinja, info, kind = FAMILIES[family]
    messages = ([SYSTEM] if with_system else []) + TWO_TURNS
    result = convert_chat_template(jinja, info)
    assert result.family == family and result.verified
    go_text, jinja_text, stops = both(jinja, info, messages,
                                      merge_system=not result.system_supported)
    assert go_text == jinja_text
    assert "Four, matey." in go_text and "And 3 + 3?" in go_text
    if with_system:
        assert "Answer like a pirate." in go_text
    assert SPECS[kind].eos_token in stops


def test_expected_chatml_text_written_out():
    """One family spelled out, so a reader sees what 'the same text' means."""
    go_text, jinja_text, stops = both(*FAMILIES["chatml"][:2], [SYSTEM] + TWO_TURNS)
    assert go_text == jinja_text == (
        "<|im_start|>system\nAnswer like a pirate.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\nFour, matey.<|im_end|>\n"
        "<|im_start|>user\nAnd 3 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n")
    # Without a system message, Qwen's template inserts its default one: so must we.
    go_text, jinja_text, _ = both(*FAMILIES["chatml"][:2], TWO_TURNS)
    assert go_text == jinja_text
    assert go_text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n")
    assert stops[:2] == ["<|im_end|>", "<|im_start|>"]


def test_llama2_keeps_bos_between_turns_and_system_in_first_inst():
    go_text, jinja_text, stops = both(*FAMILIES["llama2"][:2], [SYSTEM] + TWO_TURNS)
    assert go_text == jinja_text == ("[INST] <<SYS>>\nAnswer like a pirate.\n<</SYS>>\n\n"
                                     "What is 2 + 2? [/INST] Four, matey. </s>"
                                     "<s>[INST] And 3 + 3? [/INST]")
    assert "</s>" in stops and "[INST]" in stops


@pytest.mark.parametrize("with_system", [False, True])
def test_unknown_template_is_converted_by_placeholder_rendering(with_system):
    info = {"eos_token": "<|stop|>"}
    result = convert_chat_template(UNKNOWN_TEMPLATE, info)
    assert result.family == "generic" and result.verified and result.system_supported
    messages = ([SYSTEM] if with_system else []) + TWO_TURNS
    go_text, jinja_text, stops = both(UNKNOWN_TEMPLATE, info, messages)
    assert go_text == jinja_text
    assert go_text.startswith("CONVERSATION LOG\n") and go_text.endswith("[[bot]] ")
    assert "<|stop|>" in stops


def test_family_variant_that_differs_falls_back_to_the_generic_conversion():
    # ChatML with a different separator after <|im_end|>: the family template would be wrong.
    variant = CHATML_TEMPLATE.replace("'<|im_end|>' + '\n'", "'<|im_end|>' + '\n\n'")
    assert variant != CHATML_TEMPLATE
    result = convert_chat_template(variant, {"eos_token": "<|im_end|>"})
    assert result.verified and result.family == "chatml/generic"
    assert any("chatml template: differs" in n for n in result.notes)
    go_text, jinja_text, stops = both(variant, {"eos_token": "<|im_end|>"}, [SYSTEM] + TWO_TURNS)
    assert go_text == jinja_text and "<|im_end|>" in stops


def test_template_that_cannot_be_reproduced_says_so():
    # Content is uppercased: no per-message Go template can do that; never claimed verified.
    odd = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] | upper }}<|end|>"
           "{% endfor %}<|assistant|>")
    result = convert_chat_template(odd, {"eos_token": "<|end|>"})
    assert not result.verified and result.notes
    assert "<|end|>" in result.stops


def test_no_chat_template_gives_a_plain_template_and_a_note():
    result = convert_chat_template(None, {"eos_token": "</s>"})
    assert result.family == "none" and not result.verified and "</s>" in result.stops
    parse(result.template)


@pytest.mark.parametrize("kind", ["qwen2", "llama3", "llama2", "gemma", "phi3", "gemma2",
                                  "qwen3", "gemma3"])
def test_tiny_models_tokenizer_config_gives_turn_end_stop(kind, tiny_model):
    template, info = read_hf_chat_info(tiny_model(kind))
    result = convert_chat_template(template, info)
    assert result.verified, result.notes
    assert SPECS[kind].eos_token in result.stops


def test_literal_braces_in_a_template_are_escaped():
    tmpl = ("{% for m in messages %}{{ '{{' + m['role'] + '}} 🙂 \"é\": ' + m['content'] + '\n' }}"
            "{% endfor %}{{ '{{assistant}} 🙂 \"é\": ' }}")
    result = convert_chat_template(tmpl, {"eos_token": "</s>"})
    assert result.verified
    go_text, jinja_text, _ = both(tmpl, {"eos_token": "</s>"}, TWO_TURNS)
    assert go_text == jinja_text and go_text.startswith('{{user}} 🙂 "é": What is 2 + 2?\n')


# Shapes of real templates outside the exact families (written after the published ones).
MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}")
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
    "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n"
    "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}")
LLAMA31_DEFAULT_SYSTEM = (
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content']|trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = \"\" %}{%- endif %}\n"
    "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}\n"
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}\n"
    "{{- \"Today Date: \" + strftime_now(\"%d %b %Y\") + \"\\n\\n\" }}\n"
    "{{- system_message }}{{- \"<|eot_id|>\" }}\n"
    "{%- for message in messages %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    "+ message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}")


@pytest.mark.parametrize("name,jinja,info,system_supported", [
    ("mistral", MISTRAL_V01, {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True},
     False),
    ("zephyr", ZEPHYR, {"eos_token": "</s>"}, True),
    ("llama3.1", LLAMA31_DEFAULT_SYSTEM, {"bos_token": "<|begin_of_text|>",
                                          "eos_token": "<|eot_id|>", "add_bos_token": True}, True),
])
@pytest.mark.parametrize("with_system", [False, True])
def test_real_world_shapes_convert_exactly(name, jinja, info, system_supported, with_system):
    result = convert_chat_template(jinja, info)
    assert result.verified and result.system_supported == system_supported, result.notes
    messages = ([SYSTEM] if with_system else []) + TWO_TURNS
    go_text, jinja_text, stops = both(jinja, info, messages, merge_system=not system_supported)
    assert go_text == jinja_text and info["eos_token"] in stops
