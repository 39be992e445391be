"""Tiny but real models: a few hundred thousand parameters, real trained tokenizers, real chat
templates, saved as standard Hugging Face folders that mlx-lm, transformers and our exporter load.

Used by the tests (every architecture we support), the benchmarks and `tailor demo`. Nothing
here downloads anything. ``cached_tiny_model(kind)`` builds once per cache folder and reuses it.
"""
from __future__ import annotations

import io
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

BUILDER_VERSION = 4

# ----------------------------------------------------------------------------------------------
# Chat templates (written after the real ones of each family)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ ' ' + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)

PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Templates of the newer families (issue 17), after the real ones, trimmed to the turn format.
SMOLLM3_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set sys = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set sys = '' %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<|im_start|>system\n## Metadata\n\nReasoning Mode: /no_think\n\n"
    "## Custom Instructions\n\n' + sys + '\n\n<|im_end|>\n' }}"
    "{%- for message in loop_messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

OLMO2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n' + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)

GRANITE_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set system_message = 'Knowledge Cutoff Date: April 2024.\n"
    "You are Granite, developed by IBM.' %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<|start_of_role|>system<|end_of_role|>' + system_message + '<|end_of_text|>\n' }}"
    "{%- for message in loop_messages %}"
    "{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content']"
    " + '<|end_of_text|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}"
    "{%- endif %}"
)

PHI4_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and 'tools' in message and message['tools'] is not none %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools']"
    " + '<|/tool|>' + '<|end|>' }}"
    "{% else %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)

MINISTRAL3_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ '[SYSTEM_PROMPT]' + messages[0]['content'] + '[/SYSTEM_PROMPT]' }}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST]' + message['content'] + '[/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)

# gpt-oss's harmony format, trimmed to final-channel answers (no analysis channel, no tools)
HARMONY_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|start|>assistant<|channel|>final<|message|>' + message['content'] + '<|end|>' }}"
    "{% else %}{{ '<|start|>' + message['role'] + '<|message|>' + message['content'] + '<|end|>' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start|>assistant<|channel|>final<|message|>' }}"
    "{% endif %}"
)

# Gemma 4, after google/gemma-4-31B-it's template (llama.cpp models/templates), trimmed to text
# turns: the system turn, <|turn>role ... <turn|>, assistant as "model", and the generation
# prompt's empty thought channel (thinking off).
GEMMA4_TEMPLATE = (
    "{{- bos_token -}}{%- set loop_messages = messages -%}"
    "{%- if messages[0]['role'] in ['system', 'developer'] -%}"
    "{{- '<|turn>system\n' + messages[0]['content'] | trim + '<turn|>\n' -}}"
    "{%- set loop_messages = messages[1:] -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\n' + message['content'] | trim + '<turn|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\n<|channel>thought\n<channel|>' -}}"
    "{%- endif -%}"
)

# Pre-tokenizer regexes of the real families.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k (GPT-4o; Phi-4-mini), as tokenizer.json spells it
_O200K_UP, _O200K_LOW = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]", r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
_O200K_C = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
O200K_SPLIT = (rf"[^\r\n\p{{L}}\p{{N}}]?{_O200K_UP}*{_O200K_LOW}+{_O200K_C}?"
               rf"|[^\r\n\p{{L}}\p{{N}}]?{_O200K_UP}+{_O200K_LOW}*{_O200K_C}?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Tekken (Mistral Nemo, Ministral 3), as tokenizer.json spells it
TEKKEN_SPLIT = (rf"[^\r\n\p{{L}}\p{{N}}]?{_O200K_UP}*{_O200K_LOW}+"
                rf"|[^\r\n\p{{L}}\p{{N}}]?{_O200K_UP}+{_O200K_LOW}*"
                r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


# ----------------------------------------------------------------------------------------------
# A small corpus: enough variety for merges, digits, punctuation, Unicode and whitespace runs.

_WORDS = ("the a an of to and in is it you that he was for on are with as his they be at one "
          "have this from or had by hot word but what some we can out other were all there when "
          "up use your how said each she which do their time if will way about many then them "
          "write would like so these her long make thing see him two has look more day could go "
          "come did number sound no most people my over know water than call first who may down "
          "side been now find any new work part take get place made live where after back little "
          "only round man year came show every good me give our under name very through just "
          "form sentence great think say help low line differ turn cause much mean before move "
          "right boy old too same tell does set three want air well also play small end put home "
          "read hand port large spell add even land here must big high such follow act why ask "
          "men change went light kind off need house picture try us again animal point mother "
          "world near build self earth father head stand own page should country found answer "
          "school grow study still learn plant cover food sun four between state keep eye never "
          "last let thought city tree cross farm hard start might story saw far sea draw left "
          "late run while press close night real life few north open seem together next white "
          "children begin got walk example ease paper group always music those both mark often "
          "letter until mile river car feet care second book carry took science eat room friend "
          "began idea fish mountain stop once base hear horse cut sure watch color face wood main "
          "café naïve über 東京 日本語 emoji 🙂 🚀 Ωmega résumé").split()


def corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        n = rng.randint(3, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        if rng.random() < 0.3:
            words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
        s = " ".join(words)
        s = s[0].upper() + s[1:]
        s += rng.choice([".", "?", "!", ",", ":", ";", "..."])
        if rng.random() < 0.1:
            s = s.replace(" ", "  ", 1)
        if rng.random() < 0.1:
            s += "\n\t" + rng.choice(_WORDS) + "()"
        lines.append(s)
    lines += ["def f(x):\n    return x + 1", "Hello, world! 123 4567 89", "  leading spaces",
              "tabs\tand\nnewlines\r\n", "{\"json\": [1, 2, 3]}", "a-b_c/d\\e"]
    return lines


# ----------------------------------------------------------------------------------------------
# Tokenizers


def _train_bpe(out: Path, *, split_regex: str, specials: list[str], vocab_size: int,
               bos: str | None, eos: str, pad: str | None, add_bos: bool,
               chat_template: str, tokenizer_class: str = "PreTrainedTokenizerFast",
               extra_config: dict | None = None) -> None:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split_regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    if add_bos and bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.save(str(out / "tokenizer.json"))
    cfg = {"tokenizer_class": tokenizer_class, "bos_token": bos, "eos_token": eos,
           "pad_token": pad, "unk_token": None, "add_bos_token": add_bos,
           "add_eos_token": False, "clean_up_tokenization_spaces": False,
           "model_max_length": 2048, "chat_template": chat_template}
    cfg.update(extra_config or {})
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: v for k, v in {"bos_token": bos, "eos_token": eos, "pad_token": pad}.items() if v},
        indent=2))


def _train_spm(out: Path, *, vocab_size: int, ids: dict[str, int], user_symbols: list[str],
               add_dummy_prefix: bool) -> None:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus()), model_writer=buf, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0,
        user_defined_symbols=user_symbols, add_dummy_prefix=add_dummy_prefix,
        split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", hard_vocab_limit=False,
        unk_id=ids["unk"], bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids.get("pad", -1),
        unk_piece=ids.get("unk_piece", "<unk>"), bos_piece=ids.get("bos_piece", "<s>"),
        eos_piece=ids.get("eos_piece", "</s>"), pad_piece=ids.get("pad_piece", "<pad>"),
        minloglevel=3, num_threads=1)
    (out / "tokenizer.model").write_bytes(buf.getvalue())


def _spm_to_hf(out: Path, tokenizer_config: dict, added_tokens: list[str]) -> None:
    """Write tokenizer_config.json, then let transformers convert tokenizer.model into
    tokenizer.json (as real SentencePiece repos ship both)."""
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    if added_tokens:
        tok.add_special_tokens({"additional_special_tokens": added_tokens})
    tok.save_pretrained(str(out))
    # Keep our template and flags exactly as written (save_pretrained may move the template
    # into chat_template.jinja; mlx-lm and our exporter read both).
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    for k, v in tokenizer_config.items():
        cfg[k] = v
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "chat_template.jinja").unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Model specs


@dataclass
class TinySpec:
    kind: str
    description: str
    config: dict
    tokenizer: str  # "bpe-llama3" | "bpe-qwen" | "spm-llama" | "spm-gemma" | "spm-phi3"
    chat_template: str
    eos_token: str  # the turn-end token the model is trained to emit
    extra: dict = field(default_factory=dict)


def _base_cfg(**kw) -> dict:
    cfg = {"hidden_size": 64, "num_hidden_layers": 2, "intermediate_size": 256,
           "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
           "max_position_embeddings": 2048, "torch_dtype": "float32"}
    cfg.update(kw)
    return cfg


SPECS: dict[str, TinySpec] = {
    "llama3": TinySpec(
        "llama3", "Llama 3 style: byte-level BPE, llama3 rope scaling, BOS added",
        _base_cfg(model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=500000.0,
                  rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                "original_max_position_embeddings": 1024,
                                "rope_type": "llama3"},
                  tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
                  hidden_act="silu"),
        "bpe-llama3", LLAMA3_TEMPLATE, "<|eot_id|>"),
    "llama2": TinySpec(
        "llama2", "Llama 2 / Mistral style: SentencePiece, [INST] template, BOS added",
        _base_cfg(model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=10000.0,
                  tie_word_embeddings=False, hidden_act="silu"),
        "spm-llama", LLAMA2_TEMPLATE, "</s>"),
    "qwen2": TinySpec(
        "qwen2", "Qwen2.5 style: byte-level BPE, ChatML, q/k/v biases, tied embeddings",
        _base_cfg(model_type="qwen2", architectures=["Qwen2ForCausalLM"], rope_theta=1000000.0,
                  tie_word_embeddings=True, hidden_act="silu", rms_norm_eps=1e-6),
        "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>"),
    "qwen3": TinySpec(
        "qwen3", "Qwen3 style: ChatML, q/k norms, head_dim different from hidden/heads",
        _base_cfg(model_type="qwen3", architectures=["Qwen3ForCausalLM"], rope_theta=1000000.0,
                  head_dim=32, tie_word_embeddings=True, hidden_act="silu", rms_norm_eps=1e-6,
                  attention_bias=False),
        "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>"),
    "gemma": TinySpec(
        "gemma", "Gemma style: SentencePiece, tied embeddings, norm offset (1 + w)",
        _base_cfg(model_type="gemma", architectures=["GemmaForCausalLM"], head_dim=32,
                  num_key_value_heads=1, rope_theta=10000.0, hidden_act="gelu_pytorch_tanh",
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                  tie_word_embeddings=True),
        "spm-gemma", GEMMA_TEMPLATE, "<end_of_turn>"),
    "phi3": TinySpec(
        "phi3", "Phi-3 style: SentencePiece + added tokens, fused qkv and gate_up",
        _base_cfg(model_type="phi3", architectures=["Phi3ForCausalLM"], rope_theta=10000.0,
                  num_key_value_heads=4, original_max_position_embeddings=2048,
                  tie_word_embeddings=False, hidden_act="silu", rope_scaling=None),
        "spm-phi3", PHI3_TEMPLATE, "<|end|>"),
    "gemma2": TinySpec(
        "gemma2", "Gemma 2 style: logit softcapping, sliding window, pre/post norms",
        _base_cfg(model_type="gemma2", architectures=["Gemma2ForCausalLM"], head_dim=32,
                  num_key_value_heads=2, rope_theta=10000.0, hidden_act="gelu_pytorch_tanh",
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                  attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                  query_pre_attn_scalar=32, sliding_window=4096, tie_word_embeddings=True),
        "spm-gemma", GEMMA_TEMPLATE, "<end_of_turn>"),
    "gemma3": TinySpec(
        "gemma3", "Gemma 3 (text) style: q/k norms, local/global rope, sliding window",
        _base_cfg(model_type="gemma3_text", architectures=["Gemma3ForCausalLM"], head_dim=32,
                  num_key_value_heads=1, rope_theta=1000000.0, rope_local_base_freq=10000.0,
                  hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
                  query_pre_attn_scalar=32, sliding_window=512, sliding_window_pattern=2,
                  rope_scaling=None, tie_word_embeddings=True),
        "spm-gemma", GEMMA_TEMPLATE, "<end_of_turn>"),
}

ALL_KINDS = list(SPECS)

# The newer families (issue 17): their own kinds, outside ALL_KINDS, so the tests that loop over
# every original fixture (and their cached folders) stay as they were.
FAMILY_SPECS: dict[str, TinySpec] = {
    "smollm3": TinySpec(
        "smollm3", "SmolLM3 style: Llama 3 BPE, ChatML, NoPE on every 4th layer, tied",
        _base_cfg(model_type="smollm3", architectures=["SmolLM3ForCausalLM"],
                  num_hidden_layers=4, rope_theta=5000000.0, no_rope_layer_interval=4,
                  no_rope_layers=[1, 1, 1, 0], tie_word_embeddings=True,
                  attention_bias=False, mlp_bias=False, hidden_act="silu",
                  rms_norm_eps=1e-6),
        "bpe-smollm3", SMOLLM3_TEMPLATE, "<|im_end|>"),
    "olmo2": TinySpec(
        "olmo2", "OLMo 2 style: cl100k-like BPE, Tulu template, q/k norms, post-norms only",
        _base_cfg(model_type="olmo2", architectures=["Olmo2ForCausalLM"], rope_theta=500000.0,
                  tie_word_embeddings=False, attention_bias=False, hidden_act="silu",
                  rms_norm_eps=1e-6),
        "bpe-olmo2", OLMO2_TEMPLATE, "<|endoftext|>"),
    "granite": TinySpec(
        "granite", "Granite 3 style: GPT-2 BPE, start_of_role template, mu-P multipliers",
        _base_cfg(model_type="granite", architectures=["GraniteForCausalLM"],
                  rope_theta=10000.0, attention_multiplier=0.0625, embedding_multiplier=6.0,
                  residual_multiplier=0.5, logits_scaling=4.0, tie_word_embeddings=True,
                  attention_bias=False, mlp_bias=False, hidden_act="silu"),
        "bpe-granite", GRANITE_TEMPLATE, "<|end_of_text|>"),
    "phi4mini": TinySpec(
        "phi4mini", "Phi-4-mini style: o200k BPE, partial rotary (0.75), longrope, tied, GQA",
        _base_cfg(model_type="phi3", architectures=["Phi3ForCausalLM"], rope_theta=10000.0,
                  partial_rotary_factor=0.75, max_position_embeddings=131072,
                  original_max_position_embeddings=4096, tie_word_embeddings=True,
                  hidden_act="silu", sliding_window=None,
                  rope_scaling={"type": "longrope",
                                "long_factor": [1.0, 1.5, 2.5, 4.0, 7.0, 12.0],
                                "short_factor": [1.0, 1.0, 1.1, 1.2, 1.3, 1.5]}),
        "bpe-phi4", PHI4_TEMPLATE, "<|end|>"),
    "ministral3": TinySpec(
        "ministral3", "Ministral 3 (text) style: Tekken BPE, [INST] template, YaRN rope with "
        "Llama 4 attention temperature (from position 8 on), tied",
        _base_cfg(model_type="ministral3", architectures=["Ministral3ForCausalLM"],
                  head_dim=16, max_position_embeddings=128, tie_word_embeddings=True,
                  hidden_act="silu", sliding_window=None,
                  layer_types=["full_attention", "full_attention"],
                  rope_parameters={"rope_type": "yarn", "rope_theta": 1000000.0,
                                   "factor": 16.0, "original_max_position_embeddings": 8,
                                   "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0,
                                   "mscale_all_dim": 1.0, "llama_4_scaling_beta": 0.1}),
        "bpe-tekken", MINISTRAL3_TEMPLATE, "</s>"),
    # Mixture-of-experts: 8 experts (llama.cpp's quantizer treats 8-expert models specially)
    "qwen3_moe": TinySpec(
        "qwen3_moe", "Qwen3-MoE style: ChatML, q/k norms, 8 experts, 2 per token",
        _base_cfg(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"],
                  rope_theta=1000000.0, head_dim=32, tie_word_embeddings=False,
                  hidden_act="silu", rms_norm_eps=1e-6, attention_bias=False, num_experts=8,
                  num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
                  moe_intermediate_size=64, norm_topk_prob=True),
        "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>"),
    "mixtral": TinySpec(
        "mixtral", "Mixtral style: SentencePiece, [INST] template, 8 experts, 2 per token",
        _base_cfg(model_type="mixtral", architectures=["MixtralForCausalLM"],
                  rope_theta=1000000.0, tie_word_embeddings=False, hidden_act="silu",
                  num_local_experts=8, num_experts_per_tok=2, intermediate_size=64),
        "spm-llama", LLAMA2_TEMPLATE, "</s>"),
    "granitemoe": TinySpec(
        "granitemoe", "Granite MoE style: GPT-2 BPE, start_of_role template, mu-P multipliers, "
        "8 experts (gate and up stacked in one input_linear), 2 per token",
        _base_cfg(model_type="granitemoe", architectures=["GraniteMoeForCausalLM"],
                  rope_theta=10000.0, attention_multiplier=0.0625, embedding_multiplier=6.0,
                  residual_multiplier=0.5, logits_scaling=4.0, tie_word_embeddings=True,
                  attention_bias=False, hidden_act="silu", num_local_experts=8,
                  num_experts_per_tok=2, intermediate_size=64),
        "bpe-granite", GRANITE_TEMPLATE, "<|end_of_text|>"),
    "gpt_oss": TinySpec(
        "gpt_oss", "gpt-oss style: o200k harmony BPE, attention sinks, sliding window on every "
        "other layer, YaRN, 8 experts with biases and the clamped SwiGLU",
        _base_cfg(model_type="gpt_oss", architectures=["GptOssForCausalLM"], head_dim=16,
                  num_local_experts=8, num_experts_per_tok=2, intermediate_size=64,
                  sliding_window=8, layer_types=["sliding_attention", "full_attention"],
                  rope_theta=150000.0, max_position_embeddings=131072,
                  rope_scaling={"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
                                "beta_slow": 1.0, "original_max_position_embeddings": 4096,
                                "truncate": False},
                  tie_word_embeddings=False, hidden_act="silu", attention_bias=True,
                  swiglu_limit=7.0),
        "bpe-harmony", HARMONY_TEMPLATE, "<|end|>"),
}
# Qwen3.5 (dense, text): three Gated DeltaNet (linear attention) layers, then one gated full
# attention layer; 2 key heads for 4 value heads (llama.cpp reorders the value heads).
FAMILY_SPECS["qwen3_5"] = TinySpec(
    "qwen3_5", "Qwen3.5 style: ChatML, hybrid Gated DeltaNet / gated attention layers, "
    "partial rotary, (1 + w) norms, tied",
    _base_cfg(model_type="qwen3_5", architectures=["Qwen3_5ForCausalLM"], num_hidden_layers=4,
              intermediate_size=128, head_dim=16, linear_num_value_heads=4,
              linear_num_key_heads=2, linear_key_head_dim=16, linear_value_head_dim=16,
              linear_conv_kernel_dim=4, full_attention_interval=4, tie_word_embeddings=True,
              rms_norm_eps=1e-6, hidden_act="silu",
              rope_parameters={"rope_type": "default", "mrope_section": [1, 1, 0],
                               "mrope_interleaved": True, "rope_theta": 10000000.0,
                               "partial_rotary_factor": 0.25}),
    "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>")
FAMILY_SPECS["qwen3_5_moe"] = TinySpec(
    "qwen3_5_moe", "Qwen3.5-MoE style: the Qwen3.5 layers with 8 experts (2 per token, stacked "
    "gate_up in the checkpoint) and a gated shared expert",
    {**FAMILY_SPECS["qwen3_5"].config, "model_type": "qwen3_5_moe",
     "architectures": ["Qwen3_5MoeForCausalLM"], "num_experts": 8, "num_experts_per_tok": 2,
     "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32,
     "decoder_sparse_step": 1, "norm_topk_prob": True, "mlp_only_layers": []},
    "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>")
FAMILY_SPECS["qwen3_next"] = TinySpec(
    "qwen3_next", "Qwen3-Next style: Gated DeltaNet with the fused qkvz/ba projections, gated "
    "attention, 8 experts per expert and a gated shared expert",
    _base_cfg(model_type="qwen3_next", architectures=["Qwen3NextForCausalLM"],
              num_hidden_layers=4, intermediate_size=128, head_dim=16,
              linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
              linear_value_head_dim=16, linear_conv_kernel_dim=4, full_attention_interval=4,
              num_experts=8, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
              moe_intermediate_size=32, shared_expert_intermediate_size=32,
              norm_topk_prob=True, partial_rotary_factor=0.25, rope_theta=10000000.0,
              tie_word_embeddings=False, rms_norm_eps=1e-6, hidden_act="silu"),
    "bpe-qwen", CHATML_TEMPLATE, "<|im_end|>")
FAMILY_SPECS["granitemoehybrid"] = TinySpec(
    "granitemoehybrid", "Granite 4 hybrid (H-Micro) style: three Mamba-2 layers and one "
    "attention layer without position embedding, mu-P multipliers, a dense shared MLP",
    _base_cfg(model_type="granitemoehybrid", architectures=["GraniteMoeHybridForCausalLM"],
              num_hidden_layers=4, intermediate_size=128, attention_bias=False,
              embedding_multiplier=6.0, attention_multiplier=0.0625, logits_scaling=4.0,
              residual_multiplier=0.5, layer_types=["mamba", "mamba", "mamba", "attention"],
              mamba_n_heads=8, mamba_d_head=16, mamba_proj_bias=False, mamba_d_state=16,
              mamba_d_conv=4, mamba_n_groups=1, mamba_conv_bias=True, mamba_expand=2,
              shared_intermediate_size=128, num_local_experts=0,
              position_embedding_type="nope", tie_word_embeddings=True, rope_theta=10000.0,
              hidden_act="silu"),
    "bpe-granite", GRANITE_TEMPLATE, "<|end_of_text|>")
FAMILY_SPECS["granitemoehybrid_moe"] = TinySpec(
    "granitemoehybrid_moe", "Granite 4 hybrid (H-Tiny) style: the Mamba-2 / attention layers "
    "with 8 experts (2 per token) and a shared expert",
    {**FAMILY_SPECS["granitemoehybrid"].config, "num_local_experts": 8,
     "num_experts_per_tok": 2, "intermediate_size": 32, "shared_intermediate_size": 64},
    "bpe-granite", GRANITE_TEMPLATE, "<|end_of_text|>")
# gpt-oss as OpenAI ships it: the experts in MXFP4 (blocks and e8m0 scales, gate and up
# interleaved in one gate_up_proj), everything else in full precision.
FAMILY_SPECS["gpt_oss_mxfp4"] = TinySpec(
    "gpt_oss_mxfp4", "gpt-oss with MXFP4 experts, in the Hugging Face checkpoint's layout",
    {**FAMILY_SPECS["gpt_oss"].config, "quantization_config": {
        "quant_method": "mxfp4", "modules_to_not_convert": [
            "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens",
            "lm_head"]}},
    "bpe-harmony", HARMONY_TEMPLATE, "<|end|>")
# Gemma 4 E2B / E4B style (text): per-layer embeddings, the last layers reading the KV of the
# last full-KV layer of their type (shared KV) with double-wide MLPs, sliding layers with a
# small window and full layers with their own head size and proportional rope (a quarter of
# each head rotated), final logit softcapping, (x * w) norms, a per-layer output scalar.
FAMILY_SPECS["gemma4"] = TinySpec(
    "gemma4", "Gemma 4 (text, E2B style): per-layer embeddings, shared-KV layers, sliding / "
    "full layers with their own head sizes, proportional rope, softcapping",
    _base_cfg(model_type="gemma4_text", architectures=["Gemma4ForCausalLM"],
              num_hidden_layers=6, intermediate_size=128, num_attention_heads=4,
              num_key_value_heads=1, head_dim=16, global_head_dim=32,
              hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
              hidden_size_per_layer_input=8, num_kv_shared_layers=3, use_double_wide_mlp=True,
              attention_k_eq_v=False, enable_moe_block=False, sliding_window=8,
              layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
              rope_parameters={
                  "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                                     "rope_theta": 1000000.0},
                  "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}},
              final_logit_softcapping=30.0, tie_word_embeddings=True,
              max_position_embeddings=131072),
    "bpe-gemma4", GEMMA4_TEMPLATE, "<turn|>")
# Gemma 4 31B style: full layers whose keys are their values (attention_k_eq_v, no v_proj) with
# their own KV head count, no per-layer embeddings, no shared KV.
FAMILY_SPECS["gemma4_31b"] = TinySpec(
    "gemma4_31b", "Gemma 4 (text, 31B style): full layers with K = V and their own KV heads",
    {**FAMILY_SPECS["gemma4"].config, "hidden_size_per_layer_input": 0,
     "num_kv_shared_layers": 0, "use_double_wide_mlp": False, "attention_k_eq_v": True,
     "num_key_value_heads": 2, "num_global_key_value_heads": 1},
    "bpe-gemma4", GEMMA4_TEMPLATE, "<turn|>")
# Gemma 4 as Google ships it (Gemma4ForConditionalGeneration): the text model inside, under
# model.language_model., beside a vision tower (a token piece of it: mlx-lm drops it).
# Gemma 4 26B-A4B style: every layer a dense MLP beside 4 experts (2 per token) with the
# router's input scale and per-expert output scales; gate and up stacked in the checkpoint.
FAMILY_SPECS["gemma4_moe"] = TinySpec(
    "gemma4_moe", "Gemma 4 (text, 26B-A4B style): a dense MLP and experts in every layer",
    {**FAMILY_SPECS["gemma4_31b"].config, "enable_moe_block": True, "num_experts": 4,
     "top_k_experts": 2, "moe_intermediate_size": 32},
    "bpe-gemma4", GEMMA4_TEMPLATE, "<turn|>")
FAMILY_SPECS["gemma4_mm"] = TinySpec(
    "gemma4_mm", "Gemma 4 multimodal checkpoint (E2B style text model and a vision tower)",
    {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
     "text_config": dict(FAMILY_SPECS["gemma4"].config, torch_dtype=None),
     "vision_config": {"model_type": "gemma4_vision", "hidden_size": 16,
                       "num_hidden_layers": 1},
     "audio_config": None, "tie_word_embeddings": True, "torch_dtype": "float32"},
    "bpe-gemma4", GEMMA4_TEMPLATE, "<turn|>")
FAMILY_KINDS = list(FAMILY_SPECS)
SPECS.update(FAMILY_SPECS)


def _build_tokenizer(spec: TinySpec, out: Path) -> None:
    if spec.tokenizer == "bpe-llama3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                    "<|end_header_id|>", "<|eot_id|>"]
        _train_bpe(out, split_regex=LLAMA3_SPLIT, specials=specials, vocab_size=700,
                   bos="<|begin_of_text|>", eos="<|eot_id|>", pad=None, add_bos=True,
                   chat_template=spec.chat_template)
    elif spec.tokenizer == "bpe-qwen":
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        _train_bpe(out, split_regex=QWEN2_SPLIT, specials=specials, vocab_size=700, bos=None,
                   eos="<|im_end|>", pad="<|endoftext|>", add_bos=False,
                   chat_template=spec.chat_template,
                   extra_config={"errors": "replace"})
    elif spec.tokenizer == "spm-llama":
        _train_spm(out, vocab_size=600, ids={"unk": 0, "bos": 1, "eos": 2}, user_symbols=[],
                   add_dummy_prefix=True)
        _spm_to_hf(out, {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                         "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                         "add_bos_token": True, "add_eos_token": False, "legacy": False,
                         "clean_up_tokenization_spaces": False,
                         "chat_template": spec.chat_template}, [])
    elif spec.tokenizer == "spm-gemma":
        _train_spm(out, vocab_size=600,
                   ids={"pad": 0, "eos": 1, "bos": 2, "unk": 3, "bos_piece": "<bos>",
                        "eos_piece": "<eos>"},
                   user_symbols=["<start_of_turn>", "<end_of_turn>"], add_dummy_prefix=False)
        _spm_to_hf(out, {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>",
                         "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
                         "add_bos_token": True, "add_eos_token": False,
                         "clean_up_tokenization_spaces": False,
                         "chat_template": spec.chat_template}, [])
    elif spec.tokenizer == "spm-phi3":
        _train_spm(out, vocab_size=600, ids={"unk": 0, "bos": 1, "eos": 2}, user_symbols=[],
                   add_dummy_prefix=True)
        _spm_to_hf(out, {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>",
                         "eos_token": "<|endoftext|>", "unk_token": "<unk>",
                         "pad_token": "<|endoftext|>", "add_bos_token": False,
                         "add_eos_token": False, "legacy": False,
                         "clean_up_tokenization_spaces": False,
                         "chat_template": spec.chat_template},
                   ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>", "<|system|>"])
    elif spec.tokenizer == "bpe-smollm3":
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>",
                    "<think>", "</think>"]
        _train_bpe(out, split_regex=LLAMA3_SPLIT, specials=specials, vocab_size=700, bos=None,
                   eos="<|im_end|>", pad="<|im_end|>", add_bos=False,
                   chat_template=spec.chat_template)
    elif spec.tokenizer == "bpe-olmo2":
        specials = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
        _train_bpe(out, split_regex=LLAMA3_SPLIT, specials=specials, vocab_size=700,
                   bos="<|endoftext|>", eos="<|endoftext|>", pad="<|pad|>", add_bos=False,
                   chat_template=spec.chat_template)
    elif spec.tokenizer == "bpe-phi4":
        specials = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>",
                    "<|tool|>", "<|/tool|>"]
        _train_bpe(out, split_regex=O200K_SPLIT, specials=specials, vocab_size=700, bos=None,
                   eos="<|endoftext|>", pad="<|endoftext|>", add_bos=False,
                   chat_template=spec.chat_template, tokenizer_class="GPT2Tokenizer")
    elif spec.tokenizer == "bpe-tekken":
        specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                    "[/SYSTEM_PROMPT]"]
        _train_bpe(out, split_regex=TEKKEN_SPLIT, specials=specials, vocab_size=700, bos="<s>",
                   eos="</s>", pad=None, add_bos=True, chat_template=spec.chat_template,
                   extra_config={"unk_token": "<unk>"})
    elif spec.tokenizer == "bpe-harmony":
        specials = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>",
                    "<|channel|>", "<|start|>", "<|end|>", "<|message|>", "<|call|>"]
        _train_bpe(out, split_regex=O200K_SPLIT, specials=specials, vocab_size=700,
                   bos="<|startoftext|>", eos="<|return|>", pad="<|endoftext|>", add_bos=False,
                   chat_template=spec.chat_template)
    elif spec.tokenizer == "bpe-granite":
        specials = ["<|end_of_text|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>",
                    "<fim_pad>", "<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>"]
        _train_bpe(out, split_regex=QWEN2_SPLIT, specials=specials, vocab_size=700,
                   bos="<|end_of_text|>", eos="<|end_of_text|>", pad="<|end_of_text|>",
                   add_bos=False, chat_template=spec.chat_template)
    elif spec.tokenizer == "bpe-gemma4":
        _train_gemma4_bpe(out, spec.chat_template)
    else:  # pragma: no cover - a spec typo
        raise ValueError(spec.tokenizer)


# Gemma 4's special tokens in its id order (pad, eos, bos, unk, mask first), its turn markers
GEMMA4_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[multimodal]", "<|tool>",
                   "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                   "<tool_response|>", '<|"|>', "<|think|>", "<|channel>", "<channel|>",
                   "<|turn>", "<turn|>"]


def _train_gemma4_bpe(out: Path, chat_template: str) -> None:
    """Gemma 4's tokenizer kind: SentencePiece-style BPE in tokenizer.json only (no
    tokenizer.model): spaces normalised to U+2581, no pre-tokenizer, <0xXX> byte fallback
    tokens after the specials, merges. Trained with newline runs split off (the real
    vocabulary never merges a newline with other text; llama.cpp's gemma4 tokenizer relies
    on it), saved without that split, as Gemma's tokenizer.json has none."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[^\n]+|[\n]+"), behavior="isolated")
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=GEMMA4_SPECIALS,
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer=trainer)
    data = json.loads(tok.to_str())
    trained = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    order = ([t for t, _ in trained[:len(GEMMA4_SPECIALS)]]
             + [f"<0x{b:02X}>" for b in range(256)] + [t for t, _ in trained[len(GEMMA4_SPECIALS):]])
    data["model"]["vocab"] = {t: i for i, t in enumerate(order)}
    data["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "},
                             "behavior": "MergedWithPrevious", "invert": False}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<bos>": {"id": "<bos>", "ids": [2], "tokens": ["<bos>"]}}}
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False, indent=1))
    cfg = {"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
           "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
           "add_bos_token": True, "add_eos_token": False, "padding_side": "left",
           "clean_up_tokenization_spaces": False, "model_max_length": 131072,
           "chat_template": chat_template}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
         "unk_token": "<unk>"}, indent=2))


def _vocab_size(out: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(out)))


def build_tiny_model(kind: str, out: Path | str, *, seed: int = 0, hidden_size: int | None = None,
                     num_hidden_layers: int | None = None, intermediate_size: int | None = None,
                     num_attention_heads: int | None = None, vocab_multiple: int = 1,
                     embed_std: float = 1.0) -> Path:
    """Build the tiny model ``kind`` (see SPECS) into the new folder ``out``; return ``out``.

    Size overrides let benchmarks build bigger siblings with the same tokenizer and template.
    ``embed_std`` 1.0 (tests) gives peaked logits, so a wrong export shows at once; the demo uses
    a small one, like real initialisations, so a LoRA adapter can learn within a minute.
    """
    import mlx.core as mx
    import numpy as np
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes

    spec = SPECS[kind]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    _build_tokenizer(spec, out)
    config = dict(spec.config)
    for k, v in {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                 "intermediate_size": intermediate_size,
                 "num_attention_heads": num_attention_heads}.items():
        if v is not None:
            config[k] = v
    n_tokens = _vocab_size(out)
    # Real checkpoints pad the embedding to a multiple (e.g. 64); tests see the padded case too.
    config["vocab_size"] = ((n_tokens + vocab_multiple - 1) // vocab_multiple) * vocab_multiple
    if config["model_type"] == "gemma4_text":
        config["vocab_size_per_layer_input"] = config["vocab_size"]  # Gemma 4: one per token
    if config["model_type"] == "gemma4":
        config["text_config"] = dict(config["text_config"], vocab_size=config["vocab_size"],
                                     vocab_size_per_layer_input=config["vocab_size"])
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    config["bos_token_id"] = tok.convert_tokens_to_ids(tok_cfg["bos_token"]) if tok_cfg.get(
        "bos_token") else None
    config["eos_token_id"] = tok.convert_tokens_to_ids(spec.eos_token)
    config["pad_token_id"] = tok.pad_token_id
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
         "do_sample": False}, indent=2))

    model_class, args_class = _get_classes(config)
    model = model_class(args_class.from_dict(config))
    rng = np.random.default_rng(seed)
    weights = {}
    for name, value in tree_flatten(model.parameters()):
        shape = value.shape
        gemma_offset = kind.startswith("gemma") and not kind.startswith("gemma4")
        if "norm" in name:
            # Non-trivial norm weights, so a missing Gemma "+1" or a dropped norm shows up
            # (Gemma 4 multiplies by w itself, as most families do).
            arr = (0.0 if gemma_offset else 1.0) + rng.normal(0, 0.1, shape)
        elif name.endswith("layer_scalar"):  # Gemma 4's per-layer output scale
            arr = rng.uniform(0.5, 1.0, shape)
        elif name.endswith(("router.scale", "router.per_expert_scale")):  # Gemma 4's router
            arr = 1.0 + rng.normal(0, 0.1, shape)
        elif name.endswith("bias"):
            arr = rng.normal(0, 0.1, shape)
        else:
            fan_in = shape[-1]
            arr = rng.normal(0, 1.0 / np.sqrt(fan_in), shape)
            if "embed_tokens" in name:
                arr = rng.normal(0, embed_std, shape)
        weights[name] = mx.array(arr.astype(np.float32))
    weights = _hf_expert_layout(weights, config["model_type"],
                                mxfp4=bool(config.get("quantization_config")))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "TINY_MODEL.json").write_text(json.dumps(
        {"kind": kind, "builder_version": BUILDER_VERSION, "seed": seed,
         "description": spec.description, "eos_token": spec.eos_token,
         "embed_std": embed_std}, indent=2))
    return out


# MXFP4's sixteen values (E2M1), by 4-bit code
MXFP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def mxfp4_blocks(w):
    """float [..., cols] -> (blocks uint8 [..., cols/32, 16], scales uint8 [..., cols/32]) as
    gpt-oss checkpoints store them: value = code's E2M1 x 2^(scale - 127), two codes a byte,
    the even value in the low nibble."""
    import numpy as np

    x = np.asarray(w, dtype=np.float32).reshape(*w.shape[:-1], w.shape[-1] // 32, 32)
    amax = np.abs(x).max(-1, keepdims=True)
    exp = np.where(amax > 0, np.floor(np.log2(np.maximum(amax, 1e-30))) - 2, -127)
    scaled = x / np.exp2(exp)
    grid = np.asarray(MXFP4_VALUES, dtype=np.float32)
    codes = np.abs(scaled[..., None] - grid).argmin(-1).astype(np.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return blocks, (exp[..., 0] + 127).astype(np.uint8)


def _gpt_oss_mxfp4_layout(weights: dict) -> dict:
    import mlx.core as mx
    import numpy as np

    out = {k: v for k, v in weights.items() if ".mlp.experts." not in k}
    for k in [k for k in weights if k.endswith("mlp.experts.gate_proj.weight")]:
        prefix = k[: -len("gate_proj.weight")]
        gate, up = (np.array(weights[prefix + p + "_proj.weight"]) for p in ("gate", "up"))
        both = np.empty((gate.shape[0], 2 * gate.shape[1], gate.shape[2]), np.float32)
        both[:, 0::2], both[:, 1::2] = gate, up
        for name, w in (("gate_up_proj", both),
                        ("down_proj", np.array(weights[prefix + "down_proj.weight"]))):
            blocks, scales = mxfp4_blocks(w)
            out[prefix + name + "_blocks"] = mx.array(blocks)
            out[prefix + name + "_scales"] = mx.array(scales)
        gb, ub = (np.array(weights[prefix + p + "_proj.bias"]) for p in ("gate", "up"))
        bias = np.empty((gb.shape[0], 2 * gb.shape[1]), np.float32)
        bias[:, 0::2], bias[:, 1::2] = gb, ub
        out[prefix + "gate_up_proj_bias"] = mx.array(bias)
        out[prefix + "down_proj_bias"] = weights[prefix + "down_proj.bias"]
    return out


def _granite_hybrid_hf_layout(weights: dict) -> dict:
    """mlx-lm's Granite 4 hybrid as Hugging Face holds it: conv kernel [C, 1, K], the dense
    MLP as shared_mlp.input_linear (gate then up) and output_linear."""
    import mlx.core as mx

    out = {}
    for name, value in weights.items():
        if name.endswith("conv1d.weight"):
            out[name] = value.moveaxis(2, 1)
        elif name.endswith("mlp.gate_proj.weight"):
            prefix = name[: -len("mlp.gate_proj.weight")]
            out[prefix + "shared_mlp.input_linear.weight"] = mx.concatenate(
                [value, weights[prefix + "mlp.up_proj.weight"]], axis=0)
        elif name.endswith("mlp.down_proj.weight"):
            out[name.replace("mlp.down_proj", "shared_mlp.output_linear")] = value
        elif not name.endswith("mlp.up_proj.weight"):
            out[name] = value
    return out


def _qwen3_5_hf_layout(weights: dict) -> dict:
    """mlx-lm's Qwen3.5 as the Hugging Face text checkpoint holds it: no language_model.
    prefix, conv1d as (channels, 1, kernel), the (1 + w) norms stored as w."""
    import mlx.core as mx

    out = {}
    for name, value in weights.items():
        name = name.removeprefix("language_model.")
        if ".switch_mlp." in name:  # Qwen3.5-MoE: stacked, gate and up in one
            prefix, proj = name.split(".switch_mlp.")
            if proj == "gate_proj.weight":
                up = weights["language_model." + prefix + ".switch_mlp.up_proj.weight"]
                out[prefix + ".experts.gate_up_proj"] = mx.concatenate([value, up], axis=1)
            elif proj == "down_proj.weight":
                out[prefix + ".experts.down_proj"] = value
            continue
        if name.endswith("conv1d.weight"):
            value = value.moveaxis(2, 1)
        elif name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight",
                            "model.norm.weight", "q_norm.weight", "k_norm.weight")):
            value = value - 1.0
        out[name] = value
    return out


def _gemma4_hf_layout(weights: dict) -> dict:
    """mlx-lm's multimodal Gemma 4 (language_model.model.*) as Google's checkpoint holds it
    (model.language_model.*), with two vision tower tensors beside it."""
    import mlx.core as mx

    out = {("model.language_model." + k[len("language_model.model."):]
            if k.startswith("language_model.model.") else k.removeprefix("language_model.")): v
           for k, v in weights.items()}
    out["model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight"] = \
        mx.zeros((16, 16))
    out["model.embed_vision.embedding_projection.weight"] = mx.zeros((64, 16))
    return out


def _hf_expert_layout(weights: dict, model_type: str, mxfp4: bool = False) -> dict:
    """MLX's stacked experts (``switch_mlp.P``) as Hugging Face checkpoints hold them: one
    tensor per expert (Mixtral: w1/w2/w3; Granite MoE: stacked, gate and up in one), so the
    fixtures load through mlx-lm's sanitize and the exporter's stacking as real MoE
    checkpoints do. Dense models pass unchanged."""
    import mlx.core as mx

    if model_type in ("qwen3_5", "qwen3_5_moe"):
        return _qwen3_5_hf_layout(weights)
    if model_type == "granitemoehybrid":
        if any(".switch_mlp." in k for k in weights):  # with experts: Granite MoE's layout
            weights = _hf_expert_layout(weights, "granitemoe")
        return _granite_hybrid_hf_layout(weights)
    if model_type == "qwen3_next":  # per-expert tensors, then Qwen3.5's conv and norm forms
        return _qwen3_5_hf_layout(_hf_expert_layout(weights, "qwen3_moe"))
    if model_type == "gemma4":
        return _gemma4_hf_layout(weights)
    if model_type == "gemma4_text" and any(".switch_glu." in k for k in weights):
        out = {k: v for k, v in weights.items() if ".switch_glu." not in k}
        for k in [k for k in weights if k.endswith("switch_glu.gate_proj.weight")]:
            prefix = k[:-len("switch_glu.gate_proj.weight")]
            out[prefix + "gate_up_proj"] = mx.concatenate(
                [weights[k], weights[prefix + "switch_glu.up_proj.weight"]], axis=1)
            out[prefix + "down_proj"] = weights[prefix + "switch_glu.down_proj.weight"]
        return out
    if model_type == "gpt_oss" and mxfp4:
        return _gpt_oss_mxfp4_layout(weights)
    if model_type == "granitemoe":
        out = {k: v for k, v in weights.items() if ".switch_mlp." not in k}
        for k in [k for k in weights if k.endswith("switch_mlp.gate_proj.weight")]:
            prefix = k.split(".switch_mlp.")[0]
            out[f"{prefix}.input_linear.weight"] = mx.concatenate(
                [weights[k], weights[f"{prefix}.switch_mlp.up_proj.weight"]], axis=1)
            out[f"{prefix}.output_linear.weight"] = weights[f"{prefix}.switch_mlp.down_proj.weight"]
        return out
    out = {}
    mixtral_names = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}
    for name, value in weights.items():
        if ".switch_mlp." not in name:
            out[name] = value
            continue
        prefix, rest = name.split(".switch_mlp.")
        proj = rest.split(".")[0]
        if prefix.endswith("block_sparse_moe"):
            proj = mixtral_names[proj]
        for e in range(value.shape[0]):
            out[f"{prefix}.experts.{e}.{proj}.weight"] = value[e]
    return out


def default_cache_dir() -> Path:
    env = os.environ.get("TAILOR_TINY_MODELS")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tailor" / "tiny-models"


def cached_tiny_model(kind: str, cache_dir: Path | str | None = None, **overrides) -> Path:
    """The folder of tiny model ``kind``, built on first use and reused afterwards.

    The cache key includes the builder version and any size overrides, so a changed builder
    never serves a stale model. Safe with parallel test workers (build in a temp, rename).
    """
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    suffix = "".join(f"-{k}{v}" for k, v in sorted(overrides.items()))
    target = cache / f"{kind}{suffix}-v{BUILDER_VERSION}"
    if (target / "TINY_MODEL.json").exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{target.name}.building-{os.getpid()}-{random.randrange(1 << 30)}"
    try:
        build_tiny_model(kind, tmp, **overrides)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "TINY_MODEL.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
