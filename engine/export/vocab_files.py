"""The training tokenizer's behaviour the GGUF vocabulary needs (what encode adds with
special tokens, the eos id, llama.cpp's pre-tokenizer hash), read from tokenizer.json and
tokenizer_config.json with the tokenizers library instead of transformers.

Importing transformers' tokenizer classes costs an export ~0.5 s of CPU (it scans the source
of every model it ships), more than the rest of a 0.4B model's vocabulary and header. For a
folder whose tokenizer transformers itself builds from those two files alone (the generic
``PreTrainedTokenizerFast`` / ``TokenizersBackend`` class, no class of its own for the model
type, nothing rebuilt), that is tokenizer.json as it is, which the tokenizers library reads
without transformers. Anything else, or another transformers version than the one these rules
were read from, loads the training tokenizer as before (``file_tokenizer`` returns None).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..models.tokenizer import TokenizerChoice

# The transformers release these rules were read from (models/auto/tokenization_auto.py and
# tokenization_utils_tokenizers.py); any other version takes the transformers path.
TRANSFORMERS_VERSION = "5.24.0"
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")
# Model types whose own tokenizer class transformers loads in place of a generic one named in
# tokenizer_config.json (MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS entries with a class of their
# own in TOKENIZER_MAPPING_NAMES), and the Mistral types that become MistralCommonBackend when
# mistral-common is installed (tests/export/test_vocab_files.py checks the first set).
OWN_CLASS_MODEL_TYPES = frozenset({
    "hyperclovax_vision_v2", "qwen2", "qwen3_5", "qwen3_5_moe", "qwen3_5_moe_text",
    "qwen4_exp", "siglip2"})
MISTRAL_MODEL_TYPES = frozenset({
    "ministral", "ministral3", "mistral", "mistral3", "mistral_large4", "mixtral", "pixtral",
    "voxtral", "voxtral_realtime"})
# tokenizer_config.json keys that make transformers change the tokenizer.json pipeline
PIPELINE_KEYS = ("add_prefix_space", "fix_mistral_regex", "split_special_tokens", "auto_map")
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _transformers_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def needs_transformers(files, tok_json: dict | None, tok_cfg: dict, config: dict) -> str | None:
    """Why the tokenizer of this folder must be loaded by transformers (a reason), or None
    when tokenizer.json and tokenizer_config.json alone say what it does. ``files``: the
    folder's model_files."""
    if not tok_json or files.get("tokenizer.json") is None:
        return "no tokenizer.json"
    if tok_cfg.get("tokenizer_class") not in GENERIC_CLASSES:
        return f"tokenizer class {tok_cfg.get('tokenizer_class')!r}"
    model_type = config.get("model_type")
    if model_type in OWN_CLASS_MODEL_TYPES or model_type in MISTRAL_MODEL_TYPES \
            or "model_name" in config or "auto_map" in config:
        return f"model type {model_type!r}: transformers may load a class of its own"
    if any(k in tok_cfg for k in PIPELINE_KEYS):
        return "tokenizer_config.json changes the tokenizer.json pipeline"
    if files.get("added_tokens.json") is not None or files.get("tokenizer.model") is not None:
        return "added_tokens.json or tokenizer.model"
    if _special_map_differs(files, tok_cfg):
        return "special_tokens_map.json names other special tokens"
    try:
        problem = _unknown_specials(tok_json, tok_cfg)
    except (KeyError, TypeError, ValueError, AttributeError):
        problem = "malformed added or special tokens"  # the training loader says how
    if problem:
        return problem
    if _transformers_version() != TRANSFORMERS_VERSION:
        return f"transformers is not {TRANSFORMERS_VERSION}, the version these rules are from"
    return None


def _special_map_differs(files, tok_cfg: dict) -> bool:
    """special_tokens_map.json overrides tokenizer_config.json's special tokens when the config
    has no added_tokens_decoder (transformers 5 _from_pretrained): only a map that repeats the
    config's values leaves them as they are."""
    path = files.get("special_tokens_map.json")
    if path is None or "added_tokens_decoder" in tok_cfg:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    if not isinstance(data, dict):
        return True
    return any(not v or _text(v) != _text(tok_cfg.get(k)) for k, v in data.items())


def _unknown_specials(tok_json: dict, tok_cfg: dict) -> str | None:
    """A special token that tokenizer.json does not hold (transformers adds it, with a new id),
    or an added_tokens_decoder entry that disagrees with tokenizer.json's added tokens."""
    vocab = (tok_json.get("model") or {}).get("vocab") or {}
    added = {int(t["id"]): t.get("content") for t in tok_json.get("added_tokens") or []}
    known = set(vocab) | set(added.values())
    named = [_text(tok_cfg.get(k)) for k in SPECIAL_KEYS]
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = tok_cfg.get(key)
        if extra:
            if not isinstance(extra, list):
                return f"{key} is not a list"
            named += [_text(t) for t in extra]
    missing = [t for t in named if t is not None and t not in known]
    if missing:
        return f"special token {missing[0]!r} is not in tokenizer.json"
    for k, t in (tok_cfg.get("added_tokens_decoder") or {}).items():
        if added.get(int(k)) != _text(t):
            return f"added token {k} differs from tokenizer.json's"
    return None


@dataclass
class FileTokenizer:
    """The part of a Hugging Face tokenizer the vocabulary reads (encode, eos_token_id,
    tailor_choice), as transformers' generic class would behave on the same files."""

    tokenizer: Any  # tokenizers.Tokenizer
    eos_token_id: int | None
    tailor_choice: TokenizerChoice

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids


def file_tokenizer(files, tok_json: dict | None, tok_cfg: dict,
                   config: dict) -> FileTokenizer | None:
    """The folder's tokenizer from its files (None: load it with transformers)."""
    if needs_transformers(files, tok_json, tok_cfg, config) is not None:
        return None
    from tokenizers import Tokenizer

    # tokenizer.json as it is: transformers 5.24's generic class keeps its post-processor
    # whatever add_bos_token / add_eos_token say (and adds nothing when it has none; tests
    # check both against transformers)
    try:
        tok = Tokenizer.from_file(str(files.get("tokenizer.json")))
    except Exception:  # noqa: BLE001 - the training tokenizer's loader says what is wrong
        return None
    eos = _text(tok_cfg.get("eos_token"))
    choice = TokenizerChoice(
        "transformers", "TokenizersBackend as transformers loads it: tokenizer.json as it is "
        "(the export read it with the tokenizers library)", loaded_class="TokenizersBackend")
    return FileTokenizer(tok, tok.token_to_id(eos) if eos else None, choice)
