"""The one tokenizer loader: every command (data check, train, generate, export, the demo) loads
a model's tokenizer here.

Two promises:
- Nothing from the model folder is executed and nothing prompts. A tokenizer that asks for
  custom code (``auto_map`` in tokenizer_config.json, or a class transformers does not have and
  no tokenizer.json to load instead) is refused with a TailorError before transformers sees
  it; transformers is called with ``trust_remote_code=False`` anyway (without it, it asks
  "Do you wish to run the custom code? [y/N]" on the terminal and hangs on an open pipe).
- The tokenizer trained with is the model's own. transformers 5 rebuilds some classes from
  their source instead of reading tokenizer.json (``LlamaTokenizer`` loses a leading space,
  ``GPT2Tokenizer`` drops StarCoder2's digit splitting). The tokenizer as loaded is compared
  with the model's files (tokenizer.json through ``tokenizers``, tokenizer.model through
  ``sentencepiece``) on a corpus; when they differ, a tokenizer that reproduces the files is
  used, and ``TokenizerChoice`` says which and why (data check notes, training Started info,
  the run record).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..events import TailorError

CUSTOM_CODE_HINT = ("use a model folder with a standard tokenizer (tokenizer.json or "
                    "tokenizer.model with a transformers tokenizer class); Tailor never runs "
                    "code from a model folder")

# Used when the export's built-in corpus (engine/export/tokenizer_corpus.py) is not there: the
# cases where rebuilt tokenizers are known to differ (leading and repeated spaces, digit runs,
# text around special tokens) and a little of everything else.
FALLBACK_CORPUS = [
    "Hello world", " Hello world", "  leading spaces", "   three", "\tleading tab", "end   ",
    "a  b", "a\n\nb", " \n ", "\n", "  ", "3", "33", "333", "3333", "12345678", "ied 4 ½ months",
    "3.14159 and 1,000,000", "v1.2.3 2024-01-01", "x² + y²", "$1,234.56 €10", "I've 'RE 'll",
    "def f(x):\n    return x + 1\n", "if (a) {\n\tb();\n}", "https://example.com/a?b=1",
    "我想在apple工作1314151天～", "нещо на Български", "مرحبا بالعالم", "नमस्ते दुनिया",
    "🚀 (normal) 😶‍🌫️ ✅ 👍🏽", "Straße Äpfel café", "''''```\"\"......!!!!",
]


@dataclass
class TokenizerChoice:
    """Which tokenizer a model is trained and exported with, and why."""

    source: str  # "transformers" (as loaded) | "tokenizer.json" | "tokenizer.model"
    reason: str  # one sentence for the user
    # up to a few strings where the tokenizer as loaded differs from the model's own files:
    # {"text", "loaded", "reference", "reference_file"}
    differences: list[dict] = field(default_factory=list)
    compared: int = 0  # strings compared
    loaded_class: str = ""  # what transformers built

    @property
    def replaced(self) -> bool:
        return self.source != "transformers"

    def note(self) -> str:
        """A line for the data check's notes ("" when the tokenizer loaded as it is)."""
        return self.reason if (self.replaced or self.differences) else ""

    def to_dict(self) -> dict:
        return {"source": self.source, "reason": self.reason, "compared": self.compared,
                "loaded_class": self.loaded_class, "differences": self.differences}


# ----------------------------------------------------------------------------------------------
# Custom code


def _read_json(path: Path | None, folder: Path) -> dict:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise TailorError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise TailorError(f"{path}:{e.lineno}: not valid JSON ({e.msg})",
                          hint="restore the file from the original model") from None
    return data if isinstance(data, dict) else {}


def _auto_map_entry(auto_map: Any) -> Any:
    """The AutoTokenizer entry of an auto_map (the legacy form is the entry itself)."""
    if isinstance(auto_map, (list, tuple)):
        return [x for x in auto_map if x] or None
    if isinstance(auto_map, dict):
        return auto_map.get("AutoTokenizer")
    return None


def _is_transformers_class(name: str) -> bool:
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    try:
        return any(tokenizer_class_from_name(n) is not None
                   for n in (name, name.removesuffix("Fast"), name + "Fast"))
    except Exception:  # noqa: BLE001 - an odd name is simply not a class transformers has
        return False


def refuse_custom_code(folder: Path | str) -> None:
    """TailorError when the tokenizer of ``folder`` would need code from the folder."""
    from .folder_files import model_files

    folder = Path(folder)
    files = model_files(folder)
    cfg_path = files.get("tokenizer_config.json")
    tok_cfg = _read_json(cfg_path, folder)
    model_cfg = _read_json(files.get("config.json"), folder)
    where = cfg_path or folder / "tokenizer_config.json"
    entry = _auto_map_entry(tok_cfg.get("auto_map"))
    if entry is None and not tok_cfg.get("tokenizer_class"):
        # without a class in tokenizer_config.json, transformers looks at config.json's auto_map
        entry = _auto_map_entry((model_cfg.get("auto_map") or {}))
        where = files.get("config.json") or folder / "config.json"
    if entry:
        code = ", ".join(str(x) for x in (entry if isinstance(entry, list) else [entry]))
        raise TailorError(
            f"{where}: the tokenizer asks for custom code (auto_map AutoTokenizer: {code}); "
            "Tailor does not run code from a model folder, so this tokenizer cannot be loaded",
            hint=CUSTOM_CODE_HINT)
    cls = tok_cfg.get("tokenizer_class")
    if isinstance(cls, str) and cls and not _is_transformers_class(cls) \
            and files.get("tokenizer.json") is None:
        raise TailorError(
            f"{where}: tokenizer class {cls!r} is not part of transformers and the folder has no "
            "tokenizer.json to load instead; it would need the folder's own code, which Tailor "
            "does not run", hint=CUSTOM_CODE_HINT)


# ----------------------------------------------------------------------------------------------
# Loading


def _from_pretrained(folder: Path):
    """transformers' tokenizer for ``folder`` (already checked), remote code disabled."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - any loader failure is the user's file
        raise _load_error(folder, e) from None


def _load_error(folder: Path, e: Exception) -> TailorError:
    text = str(e)
    if "custom code" in text or "trust_remote_code" in text:
        return TailorError(f"{folder}: the tokenizer asks for custom code; Tailor does not run "
                           "code from a model folder", hint=CUSTOM_CODE_HINT)
    return TailorError(f"{folder}: the tokenizer does not load ({type(e).__name__}: "
                       f"{text.splitlines()[0] if text else ''})",
                       hint="the folder needs tokenizer.json or tokenizer.model and "
                            "tokenizer_config.json; point at a Hugging Face model folder")


def load_hf_tokenizer(folder: Path | str):
    """The Hugging Face tokenizer of a model folder, faithful to the folder's tokenizer files
    (see the module docstring); ``.tailor_choice`` on it is the ``TokenizerChoice``. Raises
    TailorError for custom code or a tokenizer that does not load.

    Pass the model folder itself, not a ``readable_view`` of it: files linked out of the folder
    are skipped here (a view's own links all point out of it)."""
    from .folder_files import model_files, readable_view

    folder = Path(folder)
    refuse_custom_code(folder)
    files = model_files(folder)
    with readable_view(folder, files) as view:
        loaded = _from_pretrained(view)
        return _faithful(view, loaded)


def load_tokenizer(folder: Path | str, *, eos_token_ids=None):
    """mlx-lm's ``TokenizerWrapper`` around the faithful tokenizer of a model folder (for data
    preparation, training and generation). ``eos_token_ids`` as mlx-lm takes them (config.json's
    when None). Raises TailorError like ``load_hf_tokenizer``."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    from .folder_files import model_files, readable_view

    folder = Path(folder)
    refuse_custom_code(folder)
    files = model_files(folder)
    with readable_view(folder, files) as view:
        if eos_token_ids is None:
            eos_token_ids = _read_json(files.get("config.json"), folder).get("eos_token_id")
        try:
            wrapper = mlx_load_tokenizer(view, {"trust_remote_code": False},
                                         eos_token_ids=eos_token_ids)
        except TailorError:
            raise
        except Exception as e:  # noqa: BLE001 - any loader failure is the user's file
            raise _load_error(folder, e) from None
        loaded = wrapper._tokenizer
        chosen = _faithful(view, loaded)
    if chosen is not loaded:
        _rewrap(wrapper, chosen)
    return wrapper


def set_eos_token_ids(wrapper, eos_token_ids) -> None:
    """The end-of-sequence ids of mlx-lm's ``wrapper`` as ``load_tokenizer(folder,
    eos_token_ids=...)`` would have set them (the given ids plus the tokenizer's own), so a
    tokenizer loaded once can be handed to ``load_model`` (issue 21)."""
    ids = [eos_token_ids] if isinstance(eos_token_ids, int) else list(eos_token_ids or [])
    own = wrapper._tokenizer.eos_token_id
    wrapper.eos_token_ids = set(ids) | ({own} if own is not None else set())


def _rewrap(wrapper, hf) -> None:
    """Put ``hf`` inside mlx-lm's wrapper in place of the tokenizer it loaded. Same vocabulary
    and special tokens, so only the tokenizer and the detokenizer (which decodes with it)
    change; the rest (eos ids, chat template hooks, tool parser) stays as mlx-lm set it."""
    from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer

    old = wrapper._detokenizer
    wrapper._tokenizer = hf
    if isinstance(old, SPMStreamingDetokenizer):
        wrapper._detokenizer = SPMStreamingDetokenizer(hf, trim_space=old.trim_space)
    else:
        wrapper._detokenizer = type(old)(hf)


def choice_of(tokenizer) -> TokenizerChoice | None:
    """The ``TokenizerChoice`` of a tokenizer from this module (a wrapper or the HF one)."""
    return getattr(tokenizer, "tailor_choice", None)


# ----------------------------------------------------------------------------------------------
# Fidelity: the tokenizer as loaded against the model's own files


def comparison_corpus(tokenizer) -> list[str]:
    """The strings the loaded tokenizer is checked on: the export's built-in corpus when it is
    there (with the model's special tokens), else a compact one."""
    specials = [t for t in (getattr(tokenizer, "all_special_tokens", None) or [])
                if isinstance(t, str)]
    try:
        from .tokenizer_corpus import tokenizer_corpus
    except ImportError:
        return list(FALLBACK_CORPUS) + [f"x {s} y" for s in specials]
    return list(tokenizer_corpus(specials))


def _ids(tok, text: str) -> list[int]:
    return list(tok.encode(text, add_special_tokens=False))


def _differences(strings, ours, reference, limit: int = 5) -> tuple[int, list[tuple]]:
    """(how many strings differ, the first ``limit`` as (text, ours, reference))."""
    n, first = 0, []
    for s in strings:
        a, b = ours(s), reference(s)
        if a != b:
            n += 1
            if len(first) < limit:
                first.append((s, a, b))
    return n, first


def _added_texts(tok) -> list[str]:
    try:
        return [t.content for t in tok.added_tokens_decoder.values() if t.content]
    except AttributeError:
        return []


def _faithful(view: Path, loaded):
    """``loaded`` itself when it tokenizes like the folder's files, else a tokenizer built from
    them that does; the choice is attached as ``.tailor_choice``."""
    corpus = comparison_corpus(loaded)
    loaded_class = type(loaded).__name__
    chosen, choice = loaded, None
    tok_json = view / "tokenizer.json"
    if tok_json.is_file():
        chosen, choice = _against_tokenizer_json(view, tok_json, loaded, corpus)
    sp_model = view / "tokenizer.model"
    if sp_model.is_file() and not _is_byte_level_bpe(tok_json):
        chosen, choice = _against_sentencepiece(view, sp_model, chosen, corpus, choice)
    if choice is None:
        choice = TokenizerChoice("transformers", f"{loaded_class} as transformers loads it "
                                 "(no tokenizer.json or tokenizer.model to compare with)")
    choice.loaded_class = loaded_class
    chosen.tailor_choice = choice
    return chosen


def _is_byte_level_bpe(tok_json: Path) -> bool:
    if not tok_json.is_file():
        return False
    try:
        data = json.loads(tok_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return data.get("model", {}).get("type") == "BPE" and \
        "ByteLevel" in json.dumps(data.get("pre_tokenizer") or {})


def _describe(first: list[tuple], reference_file: str) -> list[dict]:
    return [{"text": s, "loaded": a, "reference": b, "reference_file": reference_file}
            for s, a, b in first]


def _against_tokenizer_json(view: Path, path: Path, loaded, corpus):
    from tokenizers import Tokenizer

    try:
        reference = Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - a tokenizer.json the tokenizers library rejects
        raise TailorError(f"{path}: not a tokenizer the tokenizers library can read "
                          f"({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                          hint="restore tokenizer.json from the original model") from None

    def ref(s):
        return reference.encode(s, add_special_tokens=False).ids

    n, first = _differences(corpus, lambda s: _ids(loaded, s), ref)
    if n == 0:
        return loaded, TokenizerChoice(
            "transformers", f"{type(loaded).__name__} as transformers loads it: tokenizes "
            f"{len(corpus)} test strings exactly as tokenizer.json", compared=len(corpus))
    faithful = _from_tokenizer_json(view)
    m, _ = _differences(corpus, lambda s: _ids(faithful, s), ref)
    s, a, b = first[0]
    if m:  # e.g. tokens added by tokenizer_config.json alone: nothing better to offer
        return loaded, TokenizerChoice(
            "transformers", f"WARNING: transformers' {type(loaded).__name__} tokenized {n} of "
            f"{len(corpus)} test strings differently from the model's tokenizer.json, e.g. "
            f"{s!r} -> {a} instead of {b}, and a tokenizer built from tokenizer.json differs on "
            f"{m}; training uses it as transformers loads it",
            _describe(first, "tokenizer.json"), len(corpus))
    return faithful, TokenizerChoice(
        "tokenizer.json",
        f"tokenizer built from tokenizer.json: transformers' {type(loaded).__name__} (the "
        f"tokenizer_class) tokenized {n} of {len(corpus)} test strings differently from the "
        f"model's tokenizer.json, e.g. {s!r} -> {a} instead of {b}",
        _describe(first, "tokenizer.json"), len(corpus))


def _from_tokenizer_json(view: Path):
    """The tokenizer exactly as tokenizer.json describes it, with tokenizer_config.json's special
    tokens and chat template (transformers' generic class, which rebuilds nothing)."""
    from transformers import PreTrainedTokenizerFast

    try:
        return PreTrainedTokenizerFast.from_pretrained(str(view), trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise _load_error(view, e) from None


def _against_sentencepiece(view: Path, path: Path, chosen, corpus, choice):
    """Compare with the sentencepiece library (what GGUF export and llama.cpp follow for a
    SentencePiece vocabulary); on a difference, use a tokenizer.json pipeline built from the
    SentencePiece model's own normalizer settings, if that one agrees."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(path))
    except (OSError, RuntimeError) as e:
        raise TailorError(f"{path}: not a SentencePiece model ({e})",
                          hint="restore tokenizer.model from the original model") from None
    # Added tokens (chat markers) are the HF tokenizer's own layer; compare plain text only.
    added = _added_texts(chosen)
    plain = [s for s in corpus if not any(t in s for t in added)]

    def ref(s):
        return list(sp.encode(s))

    n, first = _differences(plain, lambda s: _ids(chosen, s), ref)
    if n == 0:
        if choice is not None and choice.replaced:
            choice.reason += "; it agrees with tokenizer.model (sentencepiece)"
        elif choice is not None:
            choice.reason += f" and as tokenizer.model (sentencepiece) on {len(plain)}"
        else:
            choice = TokenizerChoice("transformers", f"{type(chosen).__name__} as transformers "
                                     f"loads it: tokenizes {len(plain)} test strings exactly as "
                                     "tokenizer.model (sentencepiece)", compared=len(plain))
        return chosen, choice
    candidate = _sentencepiece_pipeline(view, sp, chosen)
    m = None
    if candidate is not None:
        m, _ = _differences(plain, lambda s: _ids(candidate, s), ref)
    s, a, b = first[0]
    what = (f"{type(chosen).__name__} tokenized {n} of {len(plain)} test strings differently "
            f"from the model's tokenizer.model (sentencepiece, which GGUF export and llama.cpp "
            f"follow), e.g. {s!r} -> {a} instead of {b}")
    if m == 0:
        return candidate, TokenizerChoice(
            "tokenizer.model", "tokenizer rebuilt to follow tokenizer.model: " + what,
            _describe(first, "tokenizer.model"), len(plain))
    choice = TokenizerChoice(
        choice.source if choice else "transformers",
        f"WARNING: {what}; no faithful replacement could be built, so training uses it as it "
        "is and a GGUF export may tokenize differently", _describe(first, "tokenizer.model"),
        len(plain))
    return chosen, choice


def _sentencepiece_pipeline(view: Path, sp, chosen):
    """``chosen``'s vocabulary and model with the SentencePiece normalizer (dummy prefix on
    every text segment, spaces as "▁", the model's character map), as transformers' converter
    wrote Llama 2's tokenizer.json; None when that cannot be expressed."""
    from sentencepiece import sentencepiece_model_pb2 as model_pb2
    from tokenizers import Tokenizer, normalizers
    from transformers import PreTrainedTokenizerFast

    proto = model_pb2.ModelProto()
    proto.ParseFromString(sp.serialized_model_proto())
    spec = proto.normalizer_spec
    if spec.remove_extra_whitespaces or not spec.escape_whitespaces:
        return None  # no tokenizers normalizer strips and collapses spaces the same way
    backend = getattr(chosen, "backend_tokenizer", None)
    if backend is None:
        return None
    data = json.loads(backend.to_str())
    steps = []
    if spec.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend("\u2581"))
    steps.append(normalizers.Replace(" ", "\u2581"))
    model = data.get("model") or {}
    if model.get("type") == "BPE" and proto.trainer_spec.model_type == \
            model_pb2.TrainerSpec.BPE:
        # SentencePiece merges by the score of the merged piece; a converter that orders the
        # merges otherwise (transformers 5's) splits e.g. "a  b" differently (Llama 2's "▁▁"
        # scores -1e9). Rebuilt as transformers' original converter did.
        model = {**model, "merges": _sentencepiece_merges(proto)}
    tok = Tokenizer.from_str(json.dumps({**data, "model": model, "normalizer": None,
                                         "pre_tokenizer": None}))
    tok.normalizer = normalizers.Sequence(steps)
    kwargs = {k: getattr(chosen, k, None) for k in ("bos_token", "eos_token", "unk_token",
                                                    "pad_token")}
    faithful = PreTrainedTokenizerFast(
        tokenizer_object=tok, **{k: v for k, v in kwargs.items() if v is not None},
        chat_template=getattr(chosen, "chat_template", None),
        clean_up_tokenization_spaces=False)
    for k in ("model_max_length", "padding_side"):
        if hasattr(chosen, k):
            setattr(faithful, k, getattr(chosen, k))
    return faithful


def record_tokenizer_choice(tokenizer, report=None, job: str = "train") -> dict | None:
    """The ``TokenizerChoice`` of ``tokenizer`` as a dict for a run record (None if it did not
    come from this module); a tokenizer other than transformers' own, or one that differs from
    the model's files, is also said as a Log line through ``report``."""
    from ..events import Log

    choice = choice_of(tokenizer)
    if choice is None:
        return None
    if report is not None and choice.note():
        report(Log(job=job, level="warning" if choice.reason.startswith("WARNING") else "info",
                   message=choice.note()))
    return choice.to_dict()


def _sentencepiece_merges(proto) -> list[list[str]]:
    """BPE merges of a SentencePiece BPE model: every split of a normal piece into two pieces,
    in the order of the merged piece's score (best first), ties by the parts' ids."""
    normal = 1
    ids = {p.piece: i for i, p in enumerate(proto.pieces)}
    ranked = sorted(((p.score, i, p.piece) for i, p in enumerate(proto.pieces)
                     if p.type == normal), key=lambda x: (-x[0], x[1]))
    merges = []
    for _score, _i, piece in ranked:
        local = [(ids[piece[:k]], ids[piece[k:]], piece[:k], piece[k:])
                 for k in range(1, len(piece)) if piece[:k] in ids and piece[k:] in ids]
        merges += [[left, right] for _, _, left, right in sorted(local)]
    return merges
