"""Which of llama.cpp's pre-tokenizers reproduces a Hugging Face ``tokenizer.json``, by content.

llama.cpp (``src/llama-vocab.cpp``) knows a byte-level BPE pre-tokenizer only by the name in
``tokenizer.ggml.pre``: the name selects a list of split regexes (``llm_tokenizer_bpe``'s
constructor), each applied in turn to every piece so far, every match and every gap kept as its
own piece, and a few flags (``llama_vocab::impl::load``): ``ignore_merges`` (a piece that is a
whole vocabulary entry is taken as is) and ``clean_spaces`` (detokenization only). It applies
no normalizer. Hugging Face's pipeline is normalizer -> pre-tokenizer steps -> ByteLevel -> BPE.

``describe_tokenizer_json`` reads the normalizer, the pre-tokenizer sequence and the BPE flags
into one ``HFPreTokenizer`` (each step as the regex llama.cpp would need), and
``identify_pre_tokenizer`` compares it with ``PRE_TYPES``: the table below, written by hand from
the llama.cpp sources vendored by llama-cpp-python 0.3.36. Only an exact match names a type;
``closest_pre_type`` measures, for a refusal message or ``--allow-tokenizer-mismatch``, which
type splits a corpus most like the tokenizer does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------
# Regexes, in llama.cpp's spelling (regex escapes; literal CR/LF/TAB are read as \r \n \t).

# GPT-2's own regex: HF's ByteLevel(use_regex=True) built-in, llama.cpp's "gpt2" list. HF's
# spelling ends in an extra "|\s+"; with every gap kept as a piece the two split alike.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
GPT2_HF = GPT2 + r"|\s+"
# Contractions: tokenizer.json writes (?i:...); llama.cpp spells the cases out (same matches).
_CONTRACTIONS_HF = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}" + _TAIL
QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL
QWEN35 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
UFAKZEKA = r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}" + _TAIL  # Qwen2's without the contractions
MINICPM5 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+" + _TAIL
JAIS2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+" + "".join(rf"|\s{{{n}}}(?!\S)" for n in (512, 256, 128, 64, 32, 16, 8, 4))
         + r"|\s{1,2}(?!\S)|\s{1}")
SEED_CODER = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+"
              r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BAILINGMOE = (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")
# tokenizer.json's spelling: possessive quantifiers, which llama.cpp made greedy (the classes
# they guard cannot overlap what follows, so the splits are the same).
BAILINGMOE_HF = (r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+")
EXAONE_MOE = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}"
              r"| ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+")
_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]"
_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]"
# Mistral Nemo's: llama.cpp rewrites the case classes with lookaheads.
TEKKEN_HF = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
             r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_UP_LA = r"((?=[\p{L}])([^a-z]))"
_LOW_LA = r"((?=[\p{L}])([^A-Z]))"
TEKKEN = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UP_LA}*{_LOW_LA}+|[^\r\n\p{{L}}\p{{N}}]?{_UP_LA}+{_LOW_LA}*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_TAIL = r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
GPT4O_HF = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS_HF}?"
            rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS_HF}?" + _GPT4O_TAIL)
GPT4O = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UP_LA}*{_LOW_LA}+{_CONTRACTIONS}?"
         rf"|[^\r\n\p{{L}}\p{{N}}]?{_UP_LA}+{_LOW_LA}*{_CONTRACTIONS}?" + _GPT4O_TAIL)
TINY_AYA = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
            rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?" + _GPT4O_TAIL)
TINY_AYA_HF = (rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS_HF}?"
               rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS_HF}?" + _GPT4O_TAIL)
TINY_AYA_DIGITS = r"\d{1,3}(?=(?:\d{3})*\b)"

# DeepSeek's splits: letters of cased scripts, ASCII/CJK punctuation, CJK runs, digits.
_DS_LETTER_RANGES = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1"
    "\u03a3-\u03f5\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd"
    "\u1c90-\u1cba\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d"
    "\u1f20-\u1f45\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4"
    "\u1fb6-\u1fbc\u1fbe\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec"
    "\u1ff2-\u1ff4\u1ff6-\u1ffc\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128"
    "\u212a-\u212d\u212f-\u2134\u2139\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b"
    "\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787"
    "\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a"
    "\U00010400-\U0001044f\U000104b0-\U000104d3\U000104d8-\U000104fb\U00010c80-\U00010cb2"
    "\U00010cc0-\U00010cf2\U000118a0-\U000118df\U0001e900-\U0001e943")
DEEPSEEK_LETTERS = r"\s?[" + _DS_LETTER_RANGES + "]+"
DEEPSEEK_PUNCT = r"\s?[!-/:-~" + "\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002" + "]+"
DEEPSEEK_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"
DEEPSEEK3_CJK = "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"
_ASCII_PUNCT = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~]"  # as written: \- \[ \\ \]
DEEPSEEK3_MAIN = (_ASCII_PUNCT + r"[A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?"
                  r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPARK_MAIN = (_ASCII_PUNCT + r"[A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?"
              r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+")
FALCON_PUNCT = r"[\p{P}\$\+<=>\^~\|`]+"
BLOOM = " ?[^(\\s|.,!?\u2026\u3002\uff0c\u3001\u0964\u06d4\u060c)]+"
NEWLINE_RUNS = r"[^\n]+|[\n]+"

# Regexes that match at every position of any text: splitting with them and dropping the gaps
# (HF Split behavior "Removed", invert true, as tiktoken conversions write it) is the same as
# keeping the gaps (llama.cpp), because there are none.
_COVERING = {LLAMA3, QWEN2, QWEN35, UFAKZEKA, MINICPM5, SEED_CODER, BAILINGMOE, EXAONE_MOE,
             TEKKEN, GPT4O, TINY_AYA, DEEPSEEK3_MAIN, SPARK_MAIN, GPT2, NEWLINE_RUNS}


@dataclass(frozen=True)
class PreType:
    """One value of ``tokenizer.ggml.pre``: llama.cpp's regexes and flags for it.

    ``originals`` maps a regex position to the tokenizer.json spellings llama.cpp quotes for it
    (where it rewrote the regex for its engine). ``normalizers``: the HF normalizers this
    family's own tokenizer.json carries; llama.cpp applies none (see ``HFPreTokenizer``)."""
    name: str
    enum: str  # LLAMA_VOCAB_PRE_TYPE_*
    regexes: tuple[str, ...]
    ignore_merges: bool = False
    clean_spaces: bool = True
    originals: tuple[tuple[int, str], ...] = ()
    normalizers: tuple[str, ...] = ()
    note: str = ""

    def spellings(self, i: int) -> set[str]:
        return {canonical_regex(self.regexes[i])} | {canonical_regex(r) for j, r in self.originals
                                                     if j == i}

    @property
    def hf_structure(self) -> str:
        """The Hugging Face pre-tokenizer this type stands for, in words."""
        steps = []
        for i, rx in enumerate(self.regexes):
            if rx == GPT2:
                steps.append("ByteLevel(use_regex=true)")
            elif rx == r"\p{N}":
                steps.append("Digits(individual_digits=true)")
            elif rx == r"\p{N}+":
                steps.append("Digits(individual_digits=false)")
            else:
                steps.append(f"Split(Regex {_short(next(iter(sorted(self.spellings(i)))))}, "
                             "Isolated)")
        if GPT2 not in self.regexes:
            steps.append("ByteLevel(use_regex=false)")
        norm = f"normalizer {'/'.join(self.normalizers)} or none; " if self.normalizers else ""
        return norm + " -> ".join(steps) + f"; BPE ignore_merges={str(self.ignore_merges).lower()}"


def _t(names: str, enum: str, regexes, **kw) -> list[PreType]:
    """Rows for several names; ``name:ENUM`` where a name has its own enum value."""
    rows = []
    for n in names.split():
        n, _, own = n.partition(":")
        rows.append(PreType(n, own or enum, tuple(regexes), **kw))
    return rows


_O = {"originals": ((0, LLAMA3.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)}
# The table. Names sharing a regex list tokenize alike; within such a group the first is the
# one chosen unless the hash or the detokenization flag (clean_spaces) says otherwise.
PRE_TYPES: list[PreType] = [
    *_t("llama-bpe llama3 llama-v3 falcon3 falcon-h1 pixtral midm-2.0 lfm2", "LLAMA3", [LLAMA3],
        ignore_merges=True, **_O),
    *_t("dbrx smaug-bpe:SMAUG", "DBRX", [LLAMA3], **_O),
    *_t("chatglm-bpe", "CHATGLM4", [LLAMA3], note="llama.cpp drops the BOS id", **_O),
    *_t("glm4", "CHATGLM4", [LLAMA3], ignore_merges=True, note="llama.cpp drops the BOS id",
        **_O),
    *_t("jais-2", "JAIS2", [JAIS2],
        originals=((0, JAIS2.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("qwen2 deepseek-r1-qwen kormo f2llmv2", "QWEN2", [QWEN2], clean_spaces=False,
        normalizers=("NFC",), originals=((0, QWEN2.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("stablelm2 megrez:QWEN2", "STABLELM2", [QWEN2],
        originals=((0, QWEN2.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("hunyuan solar-open:SOLAR_OPEN grok-2:GROK_2", "HUNYUAN", [QWEN2], clean_spaces=False,
        originals=((0, QWEN2.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("laguna", "LAGUNA", [NEWLINE_RUNS, QWEN2], clean_spaces=False),
    *_t("qwen35", "QWEN35", [QWEN35], clean_spaces=False,
        originals=((0, QWEN35.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("ufakzeka", "UFAKZEKA", [UFAKZEKA], clean_spaces=False),
    *_t("minicpm5", "MINICPM5", [r"\p{N}{1,3}", MINICPM5], ignore_merges=True,
        originals=((1, MINICPM5.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("seed-coder", "SEED_CODER", [SEED_CODER], clean_spaces=False,
        originals=((0, SEED_CODER.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("bailingmoe bailingmoe2 llada-moe", "BAILINGMOE", [BAILINGMOE], clean_spaces=False,
        originals=((0, BAILINGMOE_HF),)),
    *_t("exaone-moe", "EXAONE_MOE", [EXAONE_MOE],
        originals=((0, EXAONE_MOE.replace(_CONTRACTIONS, _CONTRACTIONS_HF)),)),
    *_t("gpt-2 phi-2 gigachat a.x-4.0 mellum exaone4", "GPT2", [GPT2]),
    *_t("mpt", "MPT", [GPT2], normalizers=("NFC",)),
    *_t("olmo jais:JAIS", "OLMO", [GPT2]),
    *_t("trillion granite-docling:GRANITE_DOCLING", "TRILLION", [GPT2], clean_spaces=False),
    *_t("starcoder refact:REFACT codeshell:CODESHELL exaone:EXAONE "
        "minerva-7b:MINERVA mellum2:MELLUM2", "STARCODER", [r"\p{N}", GPT2]),
    *_t("command-r", "COMMAND_R", [r"\p{N}", GPT2], clean_spaces=False, normalizers=("NFC",)),
    *_t("smollm", "SMOLLM", [r"\p{N}", GPT2], clean_spaces=False),
    *_t("falcon", "FALCON", [FALCON_PUNCT, GPT2, "[0-9][0-9][0-9]"]),
    *_t("deepseek-llm", "DEEPSEEK_LLM", [r"[\r\n]", DEEPSEEK_LETTERS, DEEPSEEK_PUNCT, r"\s+$",
                                         DEEPSEEK_CJK, r"\p{N}+"], clean_spaces=False),
    *_t("deepseek-coder", "DEEPSEEK_CODER", [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", DEEPSEEK_CJK,
                                             r"\p{N}"], clean_spaces=False),
    *_t("deepseek-v3 hunyuan-dense:HUNYUAN_DENSE joyai-llm:JOYAI_LLM hy_v4:HY_V4", "DEEPSEEK3_LLM",
        [r"\p{N}{1,3}", DEEPSEEK3_CJK, DEEPSEEK3_MAIN], clean_spaces=False),
    *_t("spark2_5", "SPARK2_5", [r"\p{N}{1,3}", DEEPSEEK3_CJK, SPARK_MAIN, r"\p{N}"],
        clean_spaces=False),
    *_t("tekken", "TEKKEN", [TEKKEN], ignore_merges=True, clean_spaces=False,
        originals=((0, TEKKEN_HF),)),
    *_t("gpt-4o llama4 kanana2 minimax-m2:MINIMAX_M2", "GPT4O", [GPT4O], clean_spaces=False,
        originals=((0, GPT4O_HF),)),
    *_t("tiny_aya cohere2moe", "TINY_AYA", [TINY_AYA_DIGITS, TINY_AYA], clean_spaces=False,
        originals=((1, TINY_AYA_HF),)),
    *_t("bloom gpt3-finnish:GPT3_FINNISH", "BLOOM", [BLOOM]),
    *_t("poro-chat", "PORO", [BLOOM], clean_spaces=False),
    *_t("viking", "VIKING", [BLOOM, r"\p{N}"], clean_spaces=False),
]
PRE_TYPES_BY_NAME = {t.name: t for t in PRE_TYPES}


# Characters that mean themselves with or without a backslash, in and out of classes.
_NEEDLESS_ESCAPES = set("\"'/,!%&:;=@~`#")


def canonical_regex(rx: str) -> str:
    """One spelling per regex: literal CR/LF/TAB as escapes, needless escapes (\\" for ")
    dropped, contractions as (?i:...)."""
    out, i = [], 0
    while i < len(rx):
        c = rx[i]
        if c == "\\" and i + 1 < len(rx):
            out.append(rx[i + 1] if rx[i + 1] in _NEEDLESS_ESCAPES else rx[i:i + 2])
            i += 2
            continue
        out.append({"\r": r"\r", "\n": r"\n", "\t": r"\t"}.get(c, c))
        i += 1
    return "".join(out).replace(_CONTRACTIONS, _CONTRACTIONS_HF)


def _short(rx: str, n: int = 48) -> str:
    return repr(rx if len(rx) <= n else rx[: n - 3] + "...")


# ----------------------------------------------------------------------------------------------
# The Hugging Face side


@dataclass(frozen=True)
class Step:
    regex: str  # canonical
    origin: str  # the tokenizer.json step it came from, for messages
    drops_gaps: bool = False  # Split "Removed" + invert: only the matches are kept


@dataclass
class HFPreTokenizer:
    """What tokenizer.json does before BPE, in llama.cpp's terms."""
    normalizer: str | None  # "NFC", None, or a JSON description of something else
    steps: list[Step]
    byte_level: bool
    ignore_merges: bool
    clean_spaces: bool | None  # tokenizer_config's clean_up_tokenization_spaces
    problems: list[str] = field(default_factory=list)  # what llama.cpp cannot do at all

    def describe(self) -> str:
        parts = [f"normalizer {self.normalizer}"] if self.normalizer else []
        steps = [s.origin for s in self.steps]
        if self.byte_level and not any(s.regex == GPT2 for s in self.steps):
            steps.append("ByteLevel(use_regex=false)")
        parts.append(" -> ".join(steps) or "no split")
        parts.append(f"BPE ignore_merges={str(self.ignore_merges).lower()}")
        return "; ".join(parts)


def _pattern(p: dict) -> str | None:
    if "Regex" in p:
        return p["Regex"]
    if "String" in p:  # a literal: escape what a regex would read otherwise
        return "".join("\\" + c if c in r".^$*+?()[]{}|\-/" else c for c in p["String"])
    return None


def _normalizer(n) -> tuple[str | None, list[str]]:
    if not n:
        return None, []
    if n.get("type") == "Sequence":
        parts = [_normalizer(x) for x in n.get("normalizers") or []]
        names = [p for p, _ in parts if p]
        problems = [q for _, qs in parts for q in qs]
        return ("+".join(names) or None), problems
    if n.get("type") == "NFC":
        return "NFC", []
    return n.get("type", "?"), [f"normalizer {json.dumps(n)[:120]} (llama.cpp normalizes nothing)"]


def describe_tokenizer_json(tok_json: dict, tok_cfg: dict | None = None) -> HFPreTokenizer:
    """The normalizer, split steps and BPE flags of a byte-level BPE ``tokenizer.json``."""
    problems: list[str] = []
    normalizer, nproblems = _normalizer(tok_json.get("normalizer"))
    problems += nproblems
    flat: list[dict] = []

    def walk(p) -> None:
        if not p:
            return
        if p.get("type") == "Sequence":
            for q in p.get("pretokenizers") or []:
                walk(q)
        else:
            flat.append(p)

    walk(tok_json.get("pre_tokenizer"))
    steps: list[Step] = []
    byte_level = False
    for i, p in enumerate(flat):
        kind = p.get("type")
        if byte_level:
            problems.append(f"{kind} after ByteLevel (llama.cpp splits the raw text, then maps "
                            "bytes)")
        if kind == "Split":
            rx = _pattern(p.get("pattern") or {})
            behavior, invert = p.get("behavior"), bool(p.get("invert"))
            if rx is None:
                problems.append(f"Split pattern {p.get('pattern')}")
                continue
            origin = f"Split({_short(rx)}, {behavior}{', inverted' if invert else ''})"
            if behavior == "Isolated" and not invert:
                steps.append(Step(canonical_regex(rx), origin))
            elif behavior == "Removed" and invert:
                steps.append(Step(canonical_regex(rx), origin, drops_gaps=True))
            else:
                problems.append(f"{origin}: llama.cpp keeps every match and gap as its own piece")
                steps.append(Step(canonical_regex(rx), origin))
        elif kind == "Digits":
            ind = bool(p.get("individual_digits"))
            steps.append(Step(r"\p{N}" if ind else r"\p{N}+",
                              f"Digits(individual_digits={str(ind).lower()})"))
        elif kind == "Punctuation" and p.get("behavior") == "Contiguous":
            steps.append(Step(FALCON_PUNCT, "Punctuation(Contiguous)"))
        elif kind == "ByteLevel":
            byte_level = True
            if p.get("add_prefix_space"):
                problems.append("ByteLevel(add_prefix_space=true): llama.cpp adds no space "
                                "before the text")
            if p.get("use_regex", True):
                steps.append(Step(GPT2, "ByteLevel(use_regex=true)"))
        else:
            problems.append(f"pre-tokenizer {kind}{_params(p)}")
    model = tok_json.get("model") or {}
    if model.get("type") != "BPE":
        problems.append(f"model {model.get('type')} (llama.cpp's gpt2 tokenizer is BPE)")
    for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
        if model.get(key):
            problems.append(f"BPE {key}={model.get(key)!r}")
    clean = (tok_cfg or {}).get("clean_up_tokenization_spaces")
    return HFPreTokenizer(normalizer, steps, byte_level, bool(model.get("ignore_merges")),
                          clean if isinstance(clean, bool) else None, problems)


def _params(p: dict) -> str:
    rest = {k: v for k, v in p.items() if k != "type"}
    return f"({json.dumps(rest)[:80]})" if rest else ""


# ----------------------------------------------------------------------------------------------
# Matching


@dataclass
class Identification:
    """The result of comparing a tokenizer.json with PRE_TYPES."""
    structure: HFPreTokenizer
    candidates: list[PreType]  # the exact matches, best first
    deviations: list[str]  # accepted differences that do not change the ids of NFC text

    @property
    def exact(self) -> PreType | None:
        return self.candidates[0] if self.candidates else None


def _regexes_match(t: PreType, steps: list[Step]) -> bool:
    if len(t.regexes) != len(steps):
        return False
    for i, s in enumerate(steps):
        if s.regex not in t.spellings(i):
            return False
        if s.drops_gaps and t.regexes[i] not in _COVERING:
            return False
    return True


def identify_pre_tokenizer(hf: HFPreTokenizer, *, hash_opinion: str | None = None,
                           whole_word_differences=None) -> Identification:
    """The llama.cpp types whose splits and flags reproduce ``hf`` exactly, best first.

    ``whole_word_differences()``: how many vocabulary entries BPE's merges do not rebuild as
    themselves (called only when the best-ranked type's ignore_merges differs from the
    tokenizer's; 0 means the flag cannot change any id). Ranking among equals: the hash's opinion, then the same
    clean_spaces as tokenizer_config, then a listed normalizer, then table order."""
    deviations: list[str] = []
    if hf.normalizer == "NFC":
        deviations.append("the tokenizer NFC-normalizes its input and llama.cpp does not: text "
                          "not in NFC form (e.g. decomposed accents) can tokenize differently")
    if hf.problems or not hf.byte_level or (hf.normalizer not in (None, "NFC")):
        return Identification(hf, [], deviations)

    def rank(t: PreType) -> tuple:
        return (t.name != hash_opinion,
                hf.clean_spaces is not None and t.clean_spaces != hf.clean_spaces,
                bool(hf.normalizer) and hf.normalizer not in t.normalizers,
                bool(t.note), PRE_TYPES.index(t))

    same_splits = sorted((t for t in PRE_TYPES if _regexes_match(t, hf.steps)), key=rank)
    matches = [t for t in same_splits if t.ignore_merges == hf.ignore_merges]
    # The best-ranked type differs only in ignore_merges: it is as exact when the flag cannot
    # change an id for this vocabulary (measured only then: a pass over the whole vocabulary).
    if same_splits and same_splits[0].ignore_merges != hf.ignore_merges \
            and whole_word_differences is not None and int(whole_word_differences()) == 0:
        matches = same_splits
    return Identification(hf, matches, deviations)


def _hf_pre_tokenizer_for(t: PreType):
    """A ``tokenizers`` pre-tokenizer that splits as llama.cpp's type ``t`` does (the table's
    tokenizer.json spelling where llama.cpp quotes one; llama.cpp's own otherwise)."""
    from tokenizers import Regex, pre_tokenizers

    steps = []
    for i, rx in enumerate(t.regexes):
        if rx == GPT2:
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
            continue
        spelled = next((r for j, r in t.originals if j == i), rx)
        steps.append(pre_tokenizers.Split(Regex(spelled), behavior="isolated", invert=False))
    if GPT2 not in t.regexes:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    return pre_tokenizers.Sequence(steps)


def closest_pre_type(tok_json: dict, texts: list[str]) -> tuple[PreType, int]:
    """The type whose splits of ``texts`` differ from the tokenizer's on the fewest strings,
    and that number (the tokenizer's own normalizer and pre-tokenizer, through ``tokenizers``)."""
    from tokenizers import Tokenizer

    own = Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": tok_json.get("normalizer"), "pre_tokenizer": tok_json.get("pre_tokenizer"),
        "post_processor": None, "decoder": None,
        "model": {"type": "BPE", "vocab": {}, "merges": []}}))

    def pieces(pre, s: str) -> list[str]:
        if own.normalizer is not None and pre is own.pre_tokenizer:
            s = own.normalizer.normalize_str(s)
        return [p for p, _ in pre.pre_tokenize_str(s)] if pre is not None else [s]

    want = [pieces(own.pre_tokenizer, s) for s in texts]
    best: tuple[PreType, int] | None = None
    seen: set[tuple[str, ...]] = set()
    for t in PRE_TYPES:
        if t.regexes in seen:  # same splits as a type already measured
            continue
        seen.add(t.regexes)
        try:
            pre = _hf_pre_tokenizer_for(t)
        except Exception:  # noqa: BLE001 - a regex the tokenizers engine cannot compile
            continue
        n = sum(pieces(pre, s) != w for s, w in zip(texts, want))
        if best is None or n < best[1]:
            best = (t, n)
    assert best is not None
    return best
