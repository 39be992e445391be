"""Check engine/export/pretokenizers.py's table against a llama.cpp source tree (llama-cpp-python's
sdist vendors one): every row's regexes and flags against ``src/llama-vocab.cpp``, and every
row's Hugging Face structure against the real vocabularies llama.cpp tests with.

    pip download llama-cpp-python==<installed> --no-deps --no-binary :all: -d /tmp/sdist
    tar xzf /tmp/sdist/llama_cpp_python-*.tar.gz -C /tmp/sdist
    python bench/pretokenizer_table.py /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp [NAME...]

(NAMEs: only those vocabularies; all of them take ~4 minutes on 2 cores, mostly reading them.)

1. Sources: ``llm_tokenizer_bpe``'s ``case LLAMA_VOCAB_PRE_TYPE_X: regex_exprs = {...}`` and
   ``llama_vocab::impl::load``'s name -> type, ignore_merges and clean_spaces; each table row
   must agree (the enum, the regex list after canonical_regex, both flags).
2. Vocabularies: for each byte-level ``models/ggml-vocab-NAME.gguf`` with ``.inp``/``.out``
   (strings and the original Hugging Face tokenizer's ids), a ``tokenizers`` Tokenizer is built
   from the file's tokens and merges with the table row's structure (pretokenizers.py's
   ``_hf_pre_tokenizer_for``, its normalizer, its ignore_merges) and must give the ``.out`` ids:
   the table's tokenizer.json column reproduces the real tokenizers.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from engine.export import pretokenizers as P

_C_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def _c_string(lit: str) -> str:
    return re.sub(r"\\(.)", lambda m: _C_ESCAPES[m.group(1)], lit)


def source_cases(vocab_cpp: str) -> dict[str, list[str]]:
    """LLAMA_VOCAB_PRE_TYPE_X -> its regex_exprs, from llm_tokenizer_bpe's constructor."""
    start = vocab_cpp.index("struct llm_tokenizer_bpe : llm_tokenizer {")
    body = vocab_cpp[start:vocab_cpp.index("std::vector<std::string> regex_exprs;", start)]
    cases: dict[str, list[str]] = {}
    pending: list[str] = []
    for m in re.finditer(r"case LLAMA_VOCAB_PRE_TYPE_(\w+):|regex_exprs = \{(.*?)\};", body, re.S):
        if m.group(1):
            pending.append(m.group(1))
            continue
        exprs = [_c_string(lit.group(1)) for line in m.group(2).splitlines()
                 if not line.strip().startswith("//")
                 for lit in [re.match(r'\s*"((?:[^"\\]|\\.)*)"', line)] if lit]
        for case in pending:
            cases[case] = exprs
        pending = []
    return cases


def source_names(vocab_cpp: str) -> dict[str, tuple[str, bool, bool]]:
    """tokenizer.ggml.pre name -> (type, ignore_merges, clean_spaces), from impl::load."""
    load = vocab_cpp[vocab_cpp.index("if (tokenizer_pre.empty())"):]
    load = load[:load.index("} else if (type == LLAMA_VOCAB_TYPE_SPM)")]
    names = {}
    for blk in re.finditer(r'if \(((?:\s*\|\|\s*|\s*tokenizer_pre == "[^"]+"\s*)+)\)\s*\{(.*?)\}',
                           load, re.S):
        enum = re.search(r"LLAMA_VOCAB_PRE_TYPE_(\w+)", blk.group(2)).group(1)
        for name in re.findall(r'"([^"]+)"', blk.group(1)):
            names[name] = (enum, "ignore_merges = true" in blk.group(2),
                           "clean_spaces = false" not in blk.group(2))
    return names


def check_sources(root: Path) -> int:
    src = (root / "src" / "llama-vocab.cpp").read_text(encoding="utf-8")
    cases, names = source_cases(src), source_names(src)
    bad = 0
    for t in P.PRE_TYPES:
        want = cases.get(t.enum)
        if want is None or [P.canonical_regex(x) for x in want] != \
                [P.canonical_regex(x) for x in t.regexes]:
            print(f"  regexes differ: {t.name} ({t.enum})")
            bad += 1
        if names.get(t.name) != (t.enum, t.ignore_merges, t.clean_spaces):
            print(f"  flags differ: {t.name}: source {names.get(t.name)}, table "
                  f"{(t.enum, t.ignore_merges, t.clean_spaces)}")
            bad += 1
    print(f"sources: {len(P.PRE_TYPES) - bad}/{len(P.PRE_TYPES)} table rows agree "
          f"({len(names)} names in impl::load)")
    return bad


def _vocab_tokenizer(gguf_path: Path, t: P.PreType):
    import gguf
    from tokenizers import AddedToken, Tokenizer, models, normalizers

    r = gguf.GGUFReader(str(gguf_path))

    def strings(key: str) -> list[str]:
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    tokens = strings("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in strings("tokenizer.ggml.merges")]
    ttype = r.fields["tokenizer.ggml.token_type"]
    types = [int(ttype.parts[i][0]) for i in ttype.data]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=t.ignore_merges))
    if "NFC" in t.normalizers:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = P._hf_pre_tokenizer_for(t)
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False)
                            for s, ty in zip(tokens, types) if ty == 3])
    tok.add_tokens([AddedToken(s, normalized=False) for s, ty in zip(tokens, types) if ty == 4])
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    return tok, pre


# What Tailor wrote before issue 12 when the hash was unknown: GPT-2 for a plain ByteLevel
# regex (StarCoder, Command-R, ...), "llama-bpe" by model type (DeepSeek's are llama models),
# qwen2 for a (?i:...) regex with single digits.
OLD_GUESS = {"starcoder": "gpt-2", "command-r": "gpt-2", "refact": "gpt-2", "falcon": "gpt-2",
             "deepseek-llm": "llama-bpe", "deepseek-coder": "llama-bpe", "qwen35": "qwen2"}


def with_pre(src: Path, dst: Path, pre: str) -> Path:
    """A copy of the vocabulary-only GGUF ``src`` naming pre-tokenizer ``pre``."""
    import gguf

    r = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(dst), r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        array = f.types[0] == gguf.GGUFValueType.ARRAY
        w.add_key_value(name, pre if name == "tokenizer.ggml.pre" else f.contents(), f.types[0],
                        f.types[-1] if array else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def corpus_agreement(gguf_path: Path, tok) -> str:
    """llama.cpp (vocab-only) against the table's tokenizer on Tailor's export corpus."""
    import time

    from engine.export.tokenizer_corpus import tokenizer_corpus
    from engine.export.verify import open_vocab

    corpus = tokenizer_corpus()
    t0 = time.perf_counter()
    llm = open_vocab(gguf_path)
    try:
        got = [llm.tokenize(s.encode("utf-8"), add_bos=False, special=True) for s in corpus]
    finally:
        llm.close()
    seconds = time.perf_counter() - t0
    diff = [s for s, g in zip(corpus, got)
            if tok.encode(s, add_special_tokens=False).ids != list(g)]
    return (f"export corpus: llama.cpp agrees on {len(corpus) - len(diff)}/{len(corpus)} "
            f"(vocab-only load + tokenization {seconds:.2f} s)"
            + (f"; differs on {diff[:3]}" if diff else ""))


def check_vocabularies(root: Path, only: list[str]) -> int:
    bad = 0
    for inp in sorted((root / "models").glob("ggml-vocab-*.gguf.inp")):
        if only and not any(f"ggml-vocab-{n}.gguf" in inp.name for n in only):
            continue
        gguf_path = inp.with_suffix("")
        import gguf

        r = gguf.GGUFReader(str(gguf_path))
        model = bytes(r.fields["tokenizer.ggml.model"].parts[-1]).decode()
        if model != "gpt2":
            continue
        pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
        t = P.PRE_TYPES_BY_NAME.get(pre)
        if t is None:
            print(f"  {gguf_path.name}: pre {pre!r} is not in the table")
            continue
        tok, _ = _vocab_tokenizer(gguf_path, t)
        texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")[:-1]
        outs = gguf_path.with_name(gguf_path.name + ".out").read_text().splitlines()
        same = 0
        first = None
        for text, line in zip(texts, outs):
            want = [int(x) for x in line.split()]
            got = tok.encode(text, add_special_tokens=False).ids
            same += want == got
            if want != got and first is None:
                first = (text, want, got)
        print(f"  {gguf_path.name} ({pre}): {same}/{len(texts)} strings give the .out ids"
              + (f"; first difference {first[0]!r}: .out {first[1]} table {first[2]}"
                 if first else ""))
        bad += same != len(texts)
        print("    " + corpus_agreement(gguf_path, tok))
        if pre in OLD_GUESS:
            import tempfile

            with tempfile.TemporaryDirectory() as td:
                wrong = with_pre(gguf_path, Path(td) / "wrong.gguf", OLD_GUESS[pre])
                print(f"    with the old guess {OLD_GUESS[pre]!r}: "
                      + corpus_agreement(wrong, tok))
    return bad


def main(argv: list[str]) -> int:
    root = Path(argv[0])
    bad = check_sources(root)
    print("vocabularies (the table's Hugging Face structure on the real tokens and merges):")
    bad += check_vocabularies(root, argv[1:])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
