"""Tiny model folders whose tokenizer transformers 5 rebuilds differently from the model's own
files (issue 12), with the structure of the real ones:

- ``llama2_real_config``: a SentencePiece model, a tokenizer.json written the way Llama 2's was
  (normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer) and Llama 2's real
  tokenizer_config.json (``LlamaTokenizer``, ``legacy: false``). transformers' LlamaTokenizer
  rebuilds it with Metaspace(prepend_scheme="first"), which adds no "▁" before text that
  already starts with a space: '  leading spaces' loses one.
- ``starcoder2_style``: a byte-level BPE with StarCoder2's pre-tokenizer (Digits(individual)
  then ByteLevel with GPT-2's regex) and its ``GPT2Tokenizer`` class, which rebuilds ByteLevel
  alone: the digit split is dropped.

Both reuse a cached tiny model's weights (their embedding has enough rows for the vocabulary).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.tiny_models import CHATML_TEMPLATE, corpus

LLAMA2_NORMALIZER = {"type": "Sequence", "normalizers": [
    {"type": "Prepend", "prepend": "\u2581"},
    {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}


def _added(content: str) -> dict:
    return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
            "rstrip": False, "single_word": False}


def llama2_real_config(tiny_model, out: Path) -> Path:
    shutil.copytree(tiny_model("llama2"), out)
    tok = json.loads((out / "tokenizer.json").read_text(encoding="utf-8"))
    tok["normalizer"], tok["pre_tokenizer"] = LLAMA2_NORMALIZER, None
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    template = json.loads((out / "tokenizer_config.json").read_text())["chat_template"]
    # meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json, its chat template shortened
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": True, "add_eos_token": False, "bos_token": _added("<s>"),
        "clean_up_tokenization_spaces": False, "eos_token": _added("</s>"), "legacy": False,
        "model_max_length": 1000000000000000019884624838656, "pad_token": None,
        "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
        "unk_token": _added("<unk>"), "chat_template": template}, indent=2))
    (out / "special_tokens_map.json").unlink(missing_ok=True)
    return out


def _digit_corpus() -> list[str]:
    lines = corpus()
    # digit runs the GPT-2 regex keeps whole, so the BPE learns multi-digit tokens
    lines += [f"{n} and {n * 7} then {n * 113}" for n in range(10, 2000, 7)]
    return lines


def starcoder2_style(tiny_model, out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    shutil.copytree(tiny_model("llama3"), out)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    # trained without the digit split (so "123" is a token), shipped with it, as StarCoder2's
    # vocabulary has digit tokens its pre-tokenizer never produces
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=640, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_digit_corpus(), trainer=trainer)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.get_vocab_size() <= 700  # the tiny llama3's embedding rows
    tok.save(str(out / "tokenizer.json"))
    # bigcode/starcoder2-3b's tokenizer_config.json, with a ChatML template for the data check
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": True, "eos_token": "<|im_end|>",
        "model_max_length": 1000000000000000019884624838656, "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>", "chat_template": CHATML_TEMPLATE}, indent=2))
    (out / "special_tokens_map.json").unlink(missing_ok=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(bos_token_id=0, eos_token_id=2)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    gen = json.loads((out / "generation_config.json").read_text())
    gen.update(bos_token_id=0, eos_token_id=2)
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out
