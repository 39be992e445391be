"""Tokenizer metadata for GGUF: the token list, scores and types, BPE merges, the pre-tokenizer,
special ids and add-flags, and the chat template, read from a Hugging Face model folder.

SentencePiece models ("llama") are read from ``tokenizer.model`` (as llama.cpp's converter does);
byte-level BPE ("gpt2") from ``tokenizer.json``. Flags are measured on the training tokenizer
itself (does encode("a") start with BOS?), so the GGUF tokenizes as training did; where
transformers builds that tokenizer from tokenizer.json alone, it is read with the tokenizers
library instead of transformers (vocab_files.py).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path

from ..events import TailorError
from ..models.folder_files import model_files

# Token types (llama.cpp llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# The turn-end tokens of the chat families we know: the model's EOS in the GGUF is the one its
# chat template ends a turn with (llama.cpp finds other end tokens by text, Ollama does not).
TURN_END_TOKENS = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<turn|>")

# llama.cpp's pre-tokenizer detection text (convert_hf_to_gguf.py get_vocab_base_pre) and the
# hashes of the tokenizations of it for the families we export.
CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis '
          'concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 '
          'កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български '
          '\'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, \'RE you '
          'sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')
KNOWN_PRE_HASHES = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
}
@dataclass
class VocabInfo:
    model: str  # "llama" | "gpt2"
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    pre: str = "default"
    pre_source: str = ""  # how the pre-tokenizer was chosen
    # The export record's account of the choice (structure, hash opinion, deviations).
    pre_record: dict = field(default_factory=dict)
    # The pre-tokenizer is only the closest llama.cpp has, exported by the user's choice.
    pre_mismatch_allowed: bool = False
    bos_id: int | None = None
    eos_id: int | None = None
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool = False
    add_eos: bool = False
    add_space_prefix: bool | None = None
    chat_template: str | None = None
    eos_text: str = ""
    # which tokenizer the vocabulary was read with, and why (models/tokenizer.py TokenizerChoice)
    tokenizer_choice: dict | None = None

    def add_to(self, w) -> None:
        w.add_tokenizer_model(self.model)
        w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        w.add_token_types([int(t) for t in self.types])
        if self.scores is not None:
            w.add_token_scores([float(s) for s in self.scores])
        if self.merges:
            w.add_token_merges(self.merges)
        for fn, value in ((w.add_bos_token_id, self.bos_id), (w.add_eos_token_id, self.eos_id),
                          (w.add_unk_token_id, self.unk_id), (w.add_pad_token_id, self.pad_id)):
            if value is not None:
                fn(int(value))
        w.add_add_bos_token(bool(self.add_bos))
        w.add_add_eos_token(bool(self.add_eos))
        if self.add_space_prefix is not None:
            w.add_add_space_prefix(bool(self.add_space_prefix))
        if self.chat_template:
            w.add_chat_template(self.chat_template)


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def load_hf_tokenizer(folder: Path):
    """The training tokenizer, as every command loads it (engine/models/tokenizer.py: no custom
    code, faithful to the folder's tokenizer files); TailorError when it does not load."""
    from ..models.tokenizer import load_hf_tokenizer as load_training_tokenizer

    return load_training_tokenizer(folder)


def chat_template_of(folder: Path, tok_cfg: dict) -> str | None:
    files = model_files(folder)  # a template linked out of the folder is never embedded
    if files.get("chat_template.jinja") is not None:
        return files.get("chat_template.jinja").read_text(encoding="utf-8")
    if files.get("chat_template.json") is not None:
        data = json.loads(files.get("chat_template.json").read_text(encoding="utf-8"))
        return data.get("chat_template")
    tpl = tok_cfg.get("chat_template")
    if isinstance(tpl, list):  # named templates: the default one
        tpl = next((t["template"] for t in tpl if t.get("name") == "default"), None)
    return tpl


def read_vocab(folder: Path, config: dict, n_rows: int, *,
               allow_tokenizer_mismatch: bool = False,
               force_pre_tokenizer: str | None = None, tokenizer=None) -> VocabInfo:
    """The tokenizer metadata; the token list has exactly ``n_rows`` entries (the embedding's).
    ``tokenizer``: the training tokenizer to measure the add-flags and hash on (default:
    ``vocab_tokenizer``'s).

    A byte-level BPE tokenizer whose pre-tokenizer llama.cpp cannot reproduce is refused
    (TailorError) unless ``allow_tokenizer_mismatch``; ``force_pre_tokenizer`` writes the named
    type whatever the tokenizer is (for tests that check the verification catches it)."""
    folder = Path(folder)
    files = model_files(folder)  # files linked out of the folder are not read
    tok_cfg_path = files.get("tokenizer_config.json")
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8")) if tok_cfg_path else {}
    tok_json_path = files.get("tokenizer.json")
    tok_json = json.loads(tok_json_path.read_text(encoding="utf-8")) \
        if tok_json_path else None
    hf = tokenizer if tokenizer is not None else \
        vocab_tokenizer(folder, files, tok_json, tok_cfg, config)
    from .gemma4 import gemma4_vocab, is_gemma4_tokenizer

    if config.get("model_type") in ("gemma4_text", "gemma4") and is_gemma4_tokenizer(tok_json):
        info = gemma4_vocab(tok_json, tok_cfg, n_rows)  # llama.cpp's own "gemma4" type
    elif files.get("tokenizer.model") is not None and not _is_byte_level(tok_json):
        info = _sentencepiece(folder, n_rows, tok_json, tok_cfg)
    elif _is_byte_level(tok_json):
        info = _bpe(tok_json, n_rows, hf, config)
        _choose_pre(info, folder, tok_json, tok_cfg, hf, allow_tokenizer_mismatch,
                    force_pre_tokenizer)
    else:
        raise TailorError(f"{folder}: tokenizer kind not supported for GGUF export (neither a "
                          "SentencePiece tokenizer.model nor a byte-level BPE tokenizer.json)",
                          hint="a SentencePiece model needs its tokenizer.model file in the "
                               "folder; copy it from the original model")
    ids = {t: i for i, t in enumerate(info.tokens)}
    _special_ids(info, hf, tok_cfg, config, ids)
    info.chat_template = chat_template_of(folder, tok_cfg)
    _turn_end_eos(info, ids)
    from ..models.tokenizer import choice_of

    choice = choice_of(hf)
    info.tokenizer_choice = choice.to_dict() if choice is not None else None
    return info


def vocab_tokenizer(folder: Path, files, tok_json: dict | None, tok_cfg: dict, config: dict):
    """What the add-flags and the pre-tokenizer hash are measured on: the folder's tokenizer
    read from its files when transformers would build it from them alone (vocab_files.py: no
    transformers import, ~0.5 s of CPU), else the training tokenizer as transformers loads it."""
    from .vocab_files import file_tokenizer

    found = file_tokenizer(files, tok_json, tok_cfg, config)
    return found if found is not None else load_hf_tokenizer(folder)  # skips linked-out files


def check_pre_tokenizer(folder: Path, *, allow_tokenizer_mismatch: bool = False) -> None:
    """Refuse up front (before a fuse or dequantization) a byte-level BPE tokenizer whose
    pre-tokenizer llama.cpp cannot reproduce: the same TailorError read_vocab raises."""
    folder = Path(folder)
    files = model_files(folder)
    tok_json_path = files.get("tokenizer.json")
    tok_json = json.loads(tok_json_path.read_text(encoding="utf-8")) if tok_json_path else None
    if not _is_byte_level(tok_json) or allow_tokenizer_mismatch:
        return
    tok_cfg_path = files.get("tokenizer_config.json")
    tok_cfg = json.loads(tok_cfg_path.read_text(encoding="utf-8")) if tok_cfg_path else {}
    config_path = files.get("config.json")
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path else {}
    hf = vocab_tokenizer(folder, files, tok_json, tok_cfg, config if isinstance(config, dict)
                         else {})
    _choose_pre(VocabInfo("gpt2", [], []), folder, tok_json, tok_cfg, hf, False, None)


def _is_byte_level(tok_json: dict | None) -> bool:
    return bool(tok_json) and "ByteLevel" in json.dumps(tok_json.get("pre_tokenizer") or {}) \
        and tok_json.get("model", {}).get("type") == "BPE"


def _pad_to(info: VocabInfo, n_rows: int) -> None:
    n = len(info.tokens)
    if n > n_rows:
        # Tokens past the embedding can never be produced; llama.cpp needs equal counts.
        del info.tokens[n_rows:], info.types[n_rows:]
        if info.scores is not None:
            del info.scores[n_rows:]
    for i in range(n, n_rows):
        info.tokens.append(f"[PAD{i}]")
        info.types.append(UNUSED)
        if info.scores is not None:
            info.scores.append(-10000.0)


def _added_tokens(tok_json: dict | None, tok_cfg: dict) -> dict[int, tuple[str, bool]]:
    added: dict[int, tuple[str, bool]] = {}
    for t in (tok_json or {}).get("added_tokens", []):
        added[int(t["id"])] = (t["content"], bool(t.get("special")))
    for k, t in (tok_cfg.get("added_tokens_decoder") or {}).items():
        added.setdefault(int(k), (t["content"], bool(t.get("special"))))
    return added


def _sentencepiece(folder: Path, n_rows: int, tok_json, tok_cfg) -> VocabInfo:
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(folder / "tokenizer.model"))
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.IdToPiece(i))
        scores.append(float(sp.GetScore(i)))
        types.append(UNKNOWN if sp.IsUnknown(i) else CONTROL if sp.IsControl(i) else
                     UNUSED if sp.IsUnused(i) else BYTE if sp.IsByte(i) else NORMAL)
    info = VocabInfo("llama", tokens, types, scores, pre="default", pre_source="sentencepiece")
    for i, (text, special) in sorted(_added_tokens(tok_json, tok_cfg).items()):
        while i >= len(info.tokens):
            info.tokens.append(f"[PAD{len(info.tokens)}]")
            info.types.append(UNUSED)
            info.scores.append(-10000.0)
        info.tokens[i] = text
        info.scores[i] = -1000.0
        info.types[i] = CONTROL if special else USER_DEFINED
    _pad_to(info, n_rows)
    return info


def _bpe(tok_json: dict, n_rows: int, hf, config: dict) -> VocabInfo:
    model = tok_json["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    added = {i: v for i, v in _added_tokens(tok_json, {}).items()}
    for i, (text, _special) in added.items():
        vocab[text] = i
    by_id = {i: t for t, i in vocab.items()}
    n = max(n_rows, max(by_id) + 1)
    tokens, types = [], []
    for i in range(n):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(added[i][0])
            types.append(CONTROL if added[i][1] else USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    if not merges:
        raise TailorError("the BPE tokenizer has no merges; llama.cpp cannot tokenize without them")
    info = VocabInfo("gpt2", tokens, types, None, merges)
    _pad_to(info, n_rows)
    return info


def whole_word_differences(tok_json: dict) -> int:
    """How many vocabulary entries BPE's merges do not rebuild as themselves: the words whose
    ids llama.cpp's ``ignore_merges`` flag would change (0: the flag changes nothing)."""
    from tokenizers import Tokenizer

    model = dict(tok_json["model"], ignore_merges=False, dropout=None)
    bare = Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": model}))
    bpe = bare.model
    # added (special) tokens are matched before BPE ever sees the text
    added = {t["content"] for t in tok_json.get("added_tokens", [])}
    return sum(1 for token in model["vocab"]
               if token not in added and len(bpe.tokenize(token)) != 1)


def choose_pre_tokenizer(hf, tok_json: dict, tok_cfg: dict | None = None, *,
                         known: dict[str, str] = KNOWN_PRE_HASHES, corpus: list[str] | None = None
                         ) -> tuple[str | None, str, dict]:
    """llama.cpp's pre-tokenizer for a byte-level BPE tokenizer: (name, how it was chosen,
    record). The name is None when no type reproduces the tokenizer exactly; the record then
    names the closest type and how many corpus strings it splits differently.

    The tokenizer.json structure decides (pretokenizers.py); the known-hash table is a second
    opinion, recorded, and used only to choose among types that tokenize alike."""
    from .pretokenizers import closest_pre_type, describe_tokenizer_json, identify_pre_tokenizer

    h = pre_tokenizer_hash(hf)
    opinion = known.get(h)
    structure = describe_tokenizer_json(tok_json, tok_cfg)
    found = identify_pre_tokenizer(structure, hash_opinion=opinion,
                                   whole_word_differences=lambda: whole_word_differences(tok_json))
    record: dict = {"structure": structure.describe(), "hash": h[:16], "hash_opinion": opinion,
                    "exact_matches": [t.name for t in found.candidates],
                    "deviations": found.deviations}
    if found.exact is not None:
        name = found.exact.name
        source = (f"tokenizer.json structure (normalizer, split regexes, ByteLevel, BPE flags) "
                  f"matches llama.cpp's {name}")
        if opinion is None:
            record["opinions"] = "hash not in the table; structure alone"
        elif opinion == name:
            record["opinions"] = "hash and structure agree"
            source += "; the tokenizer hash agrees"
        else:
            record["opinions"] = (f"DISAGREE: the hash names {opinion!r}, the structure "
                                  f"{name!r}; the structure is used")
            source += f"; the tokenizer hash names {opinion!r} (disagrees, not used)"
        return name, source, record
    from ..models.tokenizer_corpus import tokenizer_corpus

    texts = corpus if corpus is not None else tokenizer_corpus()
    closest, n_diff = closest_pre_type(tok_json, texts)
    record.update(closest=closest.name, closest_differing_splits=n_diff,
                  closest_of_strings=len(texts), problems=structure.problems,
                  opinions=f"hash names {opinion!r}" if opinion else "hash not in the table")
    return None, f"no exact match; closest {closest.name}", record


def _choose_pre(info: VocabInfo, folder: Path, tok_json: dict, tok_cfg: dict, hf,
                allow_mismatch: bool, force: str | None) -> None:
    from .pretokenizers import PRE_TYPES_BY_NAME

    name, source, record = choose_pre_tokenizer(hf, tok_json, tok_cfg)
    info.pre_record = record
    if force is not None:
        if force not in PRE_TYPES_BY_NAME:
            raise TailorError(f"unknown pre-tokenizer {force!r}",
                              hint="one of: " + ", ".join(PRE_TYPES_BY_NAME))
        record["forced"] = force
        info.pre, info.pre_source = force, f"forced to {force} (structure says {name})"
        info.pre_mismatch_allowed = allow_mismatch
        return
    if name is not None:
        info.pre, info.pre_source = name, source
        return
    what = record["structure"]
    why = "; ".join(record.get("problems") or []) or "no llama.cpp type has these split regexes"
    closest = (f"the closest, {record['closest']!r}, splits {record['closest_differing_splits']} "
               f"of {record['closest_of_strings']} corpus strings differently")
    if not allow_mismatch:
        raise TailorError(
            f"{folder / 'tokenizer.json'}: llama.cpp has no pre-tokenizer that reproduces this "
            f"one ({what}; {why}); {closest}. A GGUF file would tokenize text differently from "
            "training, so it was not written",
            hint="the fused model folder (tailor fuse) and the MLX adapter work with this "
                 "tokenizer as they are; to write the GGUF anyway with the closest type, pass "
                 "--allow-tokenizer-mismatch (the measured mismatch rate is recorded)")
    info.pre = record["closest"]
    info.pre_source = (f"NOT an exact match ({why}); closest llama.cpp type {info.pre}, "
                       "exported with --allow-tokenizer-mismatch")
    info.pre_mismatch_allowed = True


def pre_tokenizer_hash(hf) -> str:
    """llama.cpp's fingerprint of a BPE tokenizer: sha256 of str(encode(CHKTXT))."""
    return sha256(str(hf.encode(CHKTXT)).encode()).hexdigest()


def _special_ids(info: VocabInfo, hf, tok_cfg: dict, config: dict, ids: dict[str, int]) -> None:
    def id_of(value) -> int | None:
        text = _token_text(value)
        return ids.get(text) if text else None

    info.bos_id = id_of(tok_cfg.get("bos_token"))
    if info.bos_id is None and isinstance(config.get("bos_token_id"), int):
        info.bos_id = config["bos_token_id"]
    info.eos_id = id_of(tok_cfg.get("eos_token"))
    if info.eos_id is None:
        eos = config.get("eos_token_id")
        info.eos_id = eos[0] if isinstance(eos, list) and eos else eos
    info.unk_id = id_of(tok_cfg.get("unk_token"))
    info.pad_id = id_of(tok_cfg.get("pad_token"))
    # Measure the add-flags on the training tokenizer itself.
    plain = hf.encode("a", add_special_tokens=False)
    full = hf.encode("a", add_special_tokens=True)
    info.add_bos = bool(info.bos_id is not None and len(full) > len(plain)
                        and full[0] == info.bos_id)
    info.add_eos = bool(len(full) > len(plain) and full[-1] == hf.eos_token_id
                        and full[-1] not in plain[-1:])
    if info.model == "llama":
        pieces = hf.convert_ids_to_tokens(plain)
        info.add_space_prefix = bool(pieces) and pieces[0].startswith("\u2581")


def _turn_end_eos(info: VocabInfo, ids: dict[str, int]) -> None:
    tpl = info.chat_template or ""
    for text in TURN_END_TOKENS:
        if text in tpl and text in ids:
            info.eos_id = ids[text]
            break
    if info.eos_id is not None and 0 <= info.eos_id < len(info.tokens):
        info.eos_text = info.tokens[info.eos_id]
