"""Tiny model folders whose byte-level BPE tokenizer has a chosen pre-tokenizer structure
(GPT-2's, StarCoder's, Command-R's, DeepSeek's, ... or one llama.cpp does not implement),
trained like engine/tiny_models.py's on its corpus and put on the tiny llama3 weights."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from tokenizers import processors, trainers

from engine.tiny_models import corpus

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]  # the tiny llama3's, at the same ids, so its config and template fit

# Regexes as the real tokenizer.json files write them (JSON-decoded).
LLAMA3_JSON = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_JSON = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEEPSEEK_CJK_JSON = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK_V3_JSON = (r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?"
                    r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def _split(rx: str, behavior: str = "isolated", invert: bool = False):
    return pre_tokenizers.Split(Regex(rx), behavior=behavior, invert=invert)


def _byte_level(use_regex: bool):
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True,
                                    use_regex=use_regex)


def structures() -> dict[str, dict]:
    """name -> (pre_tokenizer, normalizer, ignore_merges, clean_up_tokenization_spaces), the
    structures of real families' tokenizer.json files."""
    from engine.export.pretokenizers import DEEPSEEK_LETTERS, DEEPSEEK_PUNCT

    return {
        "gpt-2": dict(pre=_byte_level(True), clean=True),
        "starcoder": dict(pre=pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), _byte_level(True)]), clean=True),
        "command-r": dict(pre=pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True), _byte_level(True)]),
            normalizer=normalizers.NFC(), clean=False),
        "llama-bpe": dict(pre=pre_tokenizers.Sequence([_split(LLAMA3_JSON), _byte_level(False)]),
                          ignore_merges=True, clean=True),
        "qwen2": dict(pre=pre_tokenizers.Sequence([_split(QWEN2_JSON), _byte_level(False)]),
                      normalizer=normalizers.NFC(), clean=False),
        "deepseek-coder": dict(pre=pre_tokenizers.Sequence([
            _split("[\r\n]"), _split(r"\s?\p{L}+"), _split(r"\s?\p{P}+"), _split(DEEPSEEK_CJK_JSON),
            pre_tokenizers.Digits(individual_digits=True), _byte_level(False)]), clean=False),
        "deepseek-llm": dict(pre=pre_tokenizers.Sequence([
            _split("[\r\n]"), _split(DEEPSEEK_LETTERS), _split(DEEPSEEK_PUNCT), _split(r"\s+$"),
            _split(DEEPSEEK_CJK_JSON), pre_tokenizers.Digits(individual_digits=False),
            _byte_level(False)]), clean=False),
        "deepseek-v3": dict(pre=pre_tokenizers.Sequence([
            _split(r"\p{N}{1,3}"), _split("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"),
            _split(DEEPSEEK_V3_JSON), _byte_level(False)]), clean=False),
    }


def rich_corpus() -> list[str]:
    """The tiny models' corpus plus the export corpus's strings, repeated: a vocabulary trained
    on it holds the multi-digit, punctuation-letter and contraction tokens a real 100k
    vocabulary has, which a 700-token one lacks (forced wrong types then change no ids)."""
    from engine.export.tokenizer_corpus import tokenizer_corpus

    return corpus() + tokenizer_corpus() * 30


def train_tokenizer(pre, *, normalizer=None, ignore_merges: bool = False,
                    vocab_size: int = 600, texts: list[str] | None = None) -> Tokenizer:
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts if texts is not None else corpus(), trainer=trainer)
    bos = SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
        special_tokens=[(bos, tok.token_to_id(bos))])
    return tok


def model_with_tokenizer(llama3_folder: Path, dst: Path, tok: Tokenizer,
                         clean: bool | None = None) -> Path:
    """The tiny llama3 model folder copied to ``dst`` with ``tok`` as its tokenizer (the
    embedding and output rows grown with random ones when the vocabulary is larger)."""
    import mlx.core as mx
    import numpy as np

    shutil.copytree(llama3_folder, dst)
    tok.save(str(dst / "tokenizer.json"))
    config = json.loads((dst / "config.json").read_text())
    n = tok.get_vocab_size()
    if n > config["vocab_size"]:
        rng = np.random.default_rng(0)
        weights = dict(mx.load(str(dst / "model.safetensors")))
        for name in ("model.embed_tokens.weight", "lm_head.weight"):
            w = np.array(weights[name])
            extra = rng.normal(0, float(w.std()), (n - w.shape[0], w.shape[1]))
            weights[name] = mx.array(np.concatenate([w, extra.astype(w.dtype)]))
        mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "mlx"})
        config["vocab_size"] = n
        (dst / "config.json").write_text(json.dumps(config, indent=2))
    cfg_path = dst / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if clean is not None:
        cfg["clean_up_tokenization_spaces"] = clean
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return dst


def structured_model(name: str, llama3_folder: Path, dst: Path, *, rich: bool = False) -> Path:
    """A model whose tokenizer has the structure ``name`` (see ``structures``); ``rich``: a
    3000-token vocabulary trained on ``rich_corpus``."""
    s = structures()[name]
    tok = train_tokenizer(s["pre"], normalizer=s.get("normalizer"),
                          ignore_merges=s.get("ignore_merges", False),
                          vocab_size=3000 if rich else 600,
                          texts=rich_corpus() if rich else None)
    return model_with_tokenizer(llama3_folder, dst, tok, clean=s.get("clean"))
