"""Gemma 4's real vocabulary (llama.cpp's ggml-vocab-gemma-4.gguf: 262,144 tokens, 514,906
merges, and the ids Gemma 4's own Hugging Face tokenizer gives for llama.cpp's test strings)
rebuilt as the tokenizer.json Gemma 4 ships (U+2581 normaliser, BPE with <0xXX> byte fallback,
the special tokens as added tokens), put in a tiny gemma4_text folder, exported with Tailor and
tokenized by llama.cpp from the export: every string gives the original ids (issue 17; the
vocabularies of the other families: tests/test_llama_vocab_conformance.py)."""
from __future__ import annotations

import json

import pytest

from tests.llama_vocabs import VOCAB_DIR, llama_tokenizer, read_gguf_vocab, vocab_path

pytestmark = pytest.mark.skipif(
    not vocab_path("gemma-4").exists(),
    reason=f"llama.cpp's test vocabularies are not in {VOCAB_DIR}: run `make setup`")


def _tokenizer_json(v) -> dict:
    vocab = {t: i for i, t in enumerate(v.tokens) if v.types[i] != 3}  # control: added only
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}
             for i, t in enumerate(v.tokens) if v.types[i] in (3, 4)]
    bos = {"SpecialToken": {"id": "<bos>", "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<bos>": {"id": "<bos>", "ids": [v.bos],
                                                        "tokens": ["<bos>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": [m.split(" ", 1) for m in v.merges]}}


def _gemma4_folder(v, folder):
    """The tokenizer files and a two-layer gemma4_text with a vocabulary-sized embedding."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models.gemma4_text import Model, ModelArgs

    from engine.tiny_models import FAMILY_SPECS, GEMMA4_TEMPLATE

    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(_tokenizer_json(v), ensure_ascii=False),
                                           encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
        "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
        "add_eos_token": False, "chat_template": GEMMA4_TEMPLATE}))
    config = {**FAMILY_SPECS["gemma4_31b"].config, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"],
              "attention_k_eq_v": False, "num_key_value_heads": 1, "head_dim": 8,
              "global_head_dim": 16, "vocab_size": len(v.tokens),
              "vocab_size_per_layer_input": len(v.tokens), "bos_token_id": v.bos,
              "eos_token_id": v.tokens.index("<turn|>"), "torch_dtype": "float16"}
    (folder / "config.json").write_text(json.dumps(config))
    model = Model(ModelArgs.from_dict(config))  # (only the names and shapes are used)
    mx.save_safetensors(str(folder / "model.safetensors"),
                        {k: mx.zeros(p.shape, mx.float16)
                         for k, p in tree_flatten(model.parameters())},
                        metadata={"format": "mlx"})
    return folder


@pytest.mark.slow  # ~40 s: a 262,144-token vocabulary read, loaded, written and tokenized
def test_gemma4_vocabulary_tokenizes_as_gemma4_in_llama_cpp(tmp_path):
    from engine.export.gemma4 import gemma4_vocab
    from engine.export.gguf_export import export_gguf
    from engine.models.tokenizer import load_hf_tokenizer

    v = read_gguf_vocab("gemma-4")
    folder = _gemma4_folder(v, tmp_path / "gemma4-vocab")
    hf = load_hf_tokenizer(folder)  # the rebuilt side gives the original ids itself
    assert [list(hf.encode(t, add_special_tokens=False)) for t, _ in v.tests] == \
        [want for _, want in v.tests]
    # the token types llama.cpp's converter gives (control, the visible user-defined ones, bytes)
    tok_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    assert gemma4_vocab(tok_json, {}, len(v.tokens)).types == list(v.types)
    out = tmp_path / "g4.gguf"
    export_gguf(folder, out, "f16", verify=False)
    llm = llama_tokenizer(out)
    try:
        assert llm.metadata["tokenizer.ggml.model"] == "gemma4"
        assert int(llm.metadata["tokenizer.ggml.eos_token_id"]) == v.tokens.index("<turn|>")
        got = [list(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False))
               for t, _ in v.tests]
    finally:
        llm.close()
    differing = [(t, want, g) for (t, want), g in zip(v.tests, got) if want != g]
    assert not differing, differing[:3]
    assert len(v.tests) > 40
