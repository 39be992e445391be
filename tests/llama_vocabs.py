"""llama.cpp's tokenizer tests as Tailor export tests (issue 12).

llama.cpp ships vocabularies of real models with the ids their original Hugging Face tokenizer
gives (``ggml-vocab-NAME.gguf`` + ``.gguf.inp``: strings separated by ``__ggml_vocab_test__``
lines, ``.gguf.out``: one line of ids per string, ``add_special_tokens=False``). ``make setup``
extracts them into ``.venv/llama-vocabs`` (scripts/fetch_llama_vocabs.py).

For each vocabulary this module rebuilds the Hugging Face side from the GGUF (tokens, merges,
scores, token types) with the tokenizer structure the real model ships (its normalizer and
pre-tokenizer sequence, tokenizer class), writes a tiny model folder with it (one layer, a
vocabulary-sized embedding), exports it with Tailor's ``export_gguf`` and tokenizes every
``.inp`` string in llama.cpp from the export. Faithfulness of the rebuilt side is checked the
same way: the tokenizer Tailor loads from the folder must give the ``.out`` ids itself.

``python -m tests.llama_vocabs`` prints the figures.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VOCAB_DIR = Path(os.environ.get("TAILOR_LLAMA_VOCABS", REPO / ".venv" / "llama-vocabs"))
SEPARATOR = "\n__ggml_vocab_test__\n"

# ---- the Hugging Face structures the real models ship (their tokenizer.json / config)

_BL_REGEX = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": True}
_BL = {**_BL_REGEX, "use_regex": False}
_DIGITS = {"type": "Digits", "individual_digits": True}
_DIGIT_RUNS = {"type": "Digits", "individual_digits": False}
_NFC = {"type": "NFC"}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
            "invert": False}


def _seq(*steps) -> dict:
    return {"type": "Sequence", "pretokenizers": list(steps)}


def _families() -> dict[str, dict]:
    from engine.export.pretokenizers import DEEPSEEK_CJK, DEEPSEEK_LETTERS, DEEPSEEK_PUNCT
    from engine.tiny_models import LLAMA3_SPLIT, QWEN2_SPLIT

    qwen35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
              r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    return {
        # name: normalizer, pre_tokenizer, BPE ignore_merges, tokenizer_class of the real repo
        "gpt-2": dict(pre=_BL_REGEX, cls="GPT2Tokenizer"),                      # openai-community/gpt2
        "llama-bpe": dict(pre=_seq(_split(LLAMA3_SPLIT), _BL), ignore_merges=True,
                          cls="PreTrainedTokenizerFast"),                        # Llama 3
        "qwen2": dict(norm=_NFC, pre=_seq(_split(QWEN2_SPLIT), _BL), cls="Qwen2Tokenizer"),
        # no NFC: its .inp has decomposed accents whose expected ids keep the combining mark
        "qwen35": dict(pre=_seq(_split(qwen35), _BL), cls="Qwen2Tokenizer"),
        "starcoder": dict(pre=_seq(_DIGITS, _BL_REGEX), cls="GPT2Tokenizer"),   # StarCoder2
        "refact": dict(pre=_seq(_DIGITS, _BL_REGEX), cls="GPT2Tokenizer"),
        "command-r": dict(norm=_NFC, pre=_seq(_DIGITS, _BL_REGEX), cls="CohereTokenizer"),
        "mpt": dict(norm=_NFC, pre=_BL_REGEX, cls="GPTNeoXTokenizer"),
        "falcon": dict(pre=_seq({"type": "Punctuation", "behavior": "Contiguous"}, _BL_REGEX,
                                _DIGIT_RUNS, _split("[0-9][0-9][0-9]")),
                       cls="PreTrainedTokenizerFast"),
        "deepseek-coder": dict(pre=_seq(_split("[\r\n]"), _split(r"\s?\p{L}+"),
                                        _split(r"\s?\p{P}+"), _split(DEEPSEEK_CJK), _DIGITS, _BL),
                               cls="LlamaTokenizerFast"),
        "deepseek-llm": dict(pre=_seq(_split("[\r\n]"), _split(DEEPSEEK_LETTERS),
                                      _split(DEEPSEEK_PUNCT), _split(r"\s+$"),
                                      _split(DEEPSEEK_CJK), _DIGIT_RUNS, _BL),
                             cls="LlamaTokenizerFast"),
    }


SENTENCEPIECE = ("llama-spm", "phi-3")  # Llama 2's 32000-piece BPE model (Phi-3 adds tokens)
SP_PIECES = 32000


def vocab_names() -> list[str]:
    """The vocabularies with expected ids that Tailor's tokenizer kinds cover."""
    return sorted([*_families(), *SENTENCEPIECE])


def skipped_vocabularies() -> dict[str, str]:
    return {"bert-bge": "WordPiece (BERT): not a tokenizer kind Tailor exports",
            "gemma-4": "Gemma 4's own tokenizer model ('gemma4'), with a gemma4_text model: "
                       "tests/families/test_gemma4_vocab.py"}


# ---- reading llama.cpp's files


@dataclass
class GGUFVocab:
    name: str
    model: str
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float] | None
    merges: list[str]
    bos: int | None
    eos: int | None
    add_bos: bool
    tests: list[tuple[str, list[int]]] = field(default_factory=list)


def vocab_path(name: str) -> Path:
    return VOCAB_DIR / f"ggml-vocab-{name}.gguf"


def read_tests(path: Path) -> list[tuple[str, list[int]]]:
    """(text, expected ids) as llama.cpp's test-tokenizer-0 reads them."""
    raw = Path(str(path) + ".inp").read_text(encoding="utf-8")
    texts = raw.split(SEPARATOR)
    if texts and texts[-1].endswith("\n__ggml_vocab_test__"):  # the file's last separator
        texts[-1] = texts[-1][: -len("\n__ggml_vocab_test__")]
    outs = Path(str(path) + ".out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in o.split()]) for t, o in zip(texts, outs)]


def read_gguf_vocab(name: str) -> GGUFVocab:
    from engine.export.gguf_read import read_header  # gguf-py's reader takes ~7 s a file

    path = vocab_path(name)
    kv = read_header(path).kv

    def get(key, default=None):
        value = kv.get("tokenizer.ggml." + key, default)
        return list(value) if isinstance(value, (list, tuple)) else value

    v = GGUFVocab(name, get("model"), get("pre", "default"), get("tokens"), get("token_type"),
                  get("scores"), get("merges", []), get("bos_token_id"), get("eos_token_id"),
                  bool(get("add_bos_token", False)))
    v.tests = read_tests(path)
    return v


# ---- the Hugging Face side and a tiny model folder


def _write_tiny_weights(folder: Path, n_vocab: int, bos: int | None, eos: int | None) -> None:
    """One llama layer, width 32, tied embedding of ``n_vocab`` rows, float16."""
    import numpy as np
    from safetensors.numpy import save_file

    h, inter, heads, kv, head_dim = 32, 64, 2, 1, 16
    rng = np.random.default_rng(0)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float16)

    p = "model.layers.0."
    save_file({"model.embed_tokens.weight": w(n_vocab, h), "model.norm.weight":
               np.ones(h, np.float16), p + "input_layernorm.weight": np.ones(h, np.float16),
               p + "post_attention_layernorm.weight": np.ones(h, np.float16),
               p + "self_attn.q_proj.weight": w(heads * head_dim, h),
               p + "self_attn.k_proj.weight": w(kv * head_dim, h),
               p + "self_attn.v_proj.weight": w(kv * head_dim, h),
               p + "self_attn.o_proj.weight": w(h, heads * head_dim),
               p + "mlp.gate_proj.weight": w(inter, h), p + "mlp.up_proj.weight": w(inter, h),
               p + "mlp.down_proj.weight": w(h, inter)},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": h,
        "num_hidden_layers": 1, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048, "rope_theta": 10000.0, "vocab_size": n_vocab,
        "tie_word_embeddings": True, "hidden_act": "silu", "torch_dtype": "float16",
        "bos_token_id": bos, "eos_token_id": eos}, indent=2))


def _added_tokens(v: GGUFVocab, start: int = 0) -> list[dict]:
    # llama.cpp's converter writes tokenizer.json's added tokens as CONTROL (special) or
    # USER_DEFINED (not special); both are matched in raw text
    return [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": v.types[i] == 3}
            for i, t in enumerate(v.tokens) if i >= start and v.types[i] in (3, 4)]


def _tokenizer_config(v: GGUFVocab, cls: str, **extra) -> dict:
    tok = (lambda i: v.tokens[i] if i is not None and i < len(v.tokens) else None)
    return {"tokenizer_class": cls, "bos_token": tok(v.bos), "eos_token": tok(v.eos),
            "add_bos_token": v.add_bos, "add_eos_token": False,
            "clean_up_tokenization_spaces": False, "model_max_length": 4096, **extra}


def write_bpe_folder(v: GGUFVocab, folder: Path) -> None:
    fam = _families()[v.name]
    vocab: dict[str, int] = {}
    for i, t in enumerate(v.tokens):
        vocab.setdefault(t, i)  # a few vocabularies repeat a token string; the first id wins
    merges = [m.split(" ", 1) for m in v.merges]
    post = ({"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": v.tokens[v.bos], "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": v.tokens[v.bos], "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {v.tokens[v.bos]: {"id": v.tokens[v.bos], "ids": [v.bos],
                                                  "tokens": [v.tokens[v.bos]]}}}
            if v.add_bos and v.bos is not None else
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
             "use_regex": False})
    data = {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": _added_tokens(v), "normalizer": fam.get("norm"),
            "pre_tokenizer": fam["pre"], "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None,
                      "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": bool(fam.get("ignore_merges")), "vocab": vocab,
                      "merges": merges}}
    (folder / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False),
                                           encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(v, fam["cls"]),
                                                             indent=2))


def write_sentencepiece_folder(v: GGUFVocab, folder: Path) -> None:
    """tokenizer.model rebuilt from the GGUF's pieces, scores and types (a BPE model with byte
    fallback and SentencePiece's dummy prefix, as Llama 2's), plus Llama 2's tokenizer_config
    (LlamaTokenizer, legacy false); Phi-3's extra tokens as added tokens."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    for i in range(SP_PIECES):
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = v.tokens[i], float(v.scores[i]), int(v.types[i])
    ts = m.trainer_spec
    ts.model_type, ts.vocab_size, ts.byte_fallback = pb.TrainerSpec.BPE, SP_PIECES, True
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = m.normalizer_spec
    ns.name, ns.add_dummy_prefix, ns.remove_extra_whitespaces, ns.escape_whitespaces = \
        "identity", True, False, True
    (folder / "tokenizer.model").write_bytes(m.SerializeToString())
    added = {str(t["id"]): {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip",
                                               "single_word", "special")}
             for t in _added_tokens(v, SP_PIECES)}
    (folder / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(
        v, "LlamaTokenizer", legacy=False, unk_token="<unk>", added_tokens_decoder=added),
        indent=2))


def build_model_folder(v: GGUFVocab, folder: Path) -> Path:
    folder.mkdir(parents=True)
    if v.model == "llama":
        write_sentencepiece_folder(v, folder)
    else:
        write_bpe_folder(v, folder)
    _write_tiny_weights(folder, len(v.tokens), v.bos, v.eos)
    return folder


# ---- the comparison


@dataclass
class Conformance:
    name: str
    pre_written: str = ""  # tokenizer.ggml.pre in Tailor's export
    pre_expected: str = ""  # in llama.cpp's file
    strings: int = 0
    strings_equal: int = 0
    ids: int = 0
    ids_matched: int = 0
    hf_strings_equal: int = 0  # the rebuilt Hugging Face side itself (faithfulness)
    tokenizer_source: str = ""
    first_difference: tuple | None = None
    refused: str = ""  # the export's TailorError, when it refused the tokenizer

    def line(self) -> str:
        if self.refused:
            return (f"{self.name}: export refused (Tailor loads {self.hf_strings_equal}/"
                    f"{self.strings}): {self.refused.splitlines()[0]}")
        return (f"{self.name}: {self.ids_matched}/{self.ids} ids, {self.strings_equal}/"
                f"{self.strings} strings (Tailor loads {self.hf_strings_equal}/{self.strings}; "
                f"pre {self.pre_written!r}, llama.cpp's file {self.pre_expected!r})")


def llama_tokenizer(path: Path):
    import contextlib

    import llama_cpp

    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)


def check_vocabulary(name: str, work: Path) -> Conformance:
    """Export a tiny model with vocabulary ``name`` and compare llama.cpp's ids with ``.out``."""
    from engine.events import TailorError
    from engine.export.gguf_export import export_gguf
    from engine.export.gguf_read import read_header
    from engine.models.tokenizer import choice_of, load_hf_tokenizer

    v = read_gguf_vocab(name)
    folder = build_model_folder(v, work / name)
    result = Conformance(name, pre_expected=v.pre, strings=len(v.tests))
    hf = load_hf_tokenizer(folder)
    result.tokenizer_source = choice_of(hf).source
    result.hf_strings_equal = sum(list(hf.encode(t, add_special_tokens=False)) == want
                                  for t, want in v.tests)
    out = work / f"{name}.gguf"
    try:
        export_gguf(folder, out, "f16", verify=False)
    except TailorError as e:
        result.refused = e.message + "\n  hint: " + e.hint
        return result
    result.pre_written = read_header(out).kv.get("tokenizer.ggml.pre", "")
    llm = llama_tokenizer(out)
    try:
        for text, want in v.tests:
            got = list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))
            result.ids += len(want)
            # ids matched: those before the first difference
            result.ids_matched += len(os.path.commonprefix([want, got]))
            if want == got:
                result.strings_equal += 1
            elif result.first_difference is None:
                result.first_difference = (text, want, got)
    finally:
        llm.close()
    return result


if __name__ == "__main__":  # the figures for the README
    import sys
    import tempfile
    import time

    with tempfile.TemporaryDirectory() as tmp:
        for name in sys.argv[1:] or vocab_names():
            t0 = time.time()
            r = check_vocabulary(name, Path(tmp))
            print(r.line(), f"[{time.time() - t0:.1f} s]", flush=True)
            if r.first_difference:
                print("   first difference:", r.first_difference)
