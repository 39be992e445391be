"""Every fixture architecture exported to GGUF and loaded in llama.cpp (llama-cpp-python):
tokenization as in training, next-token argmax and logits as MLX's, chat template and EOS."""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import gguf
import llama_cpp
import mlx.core as mx
import numpy as np
import pytest
from transformers import AutoTokenizer

from engine.export.gguf_export import export_gguf, record_path
from engine.export.verify import TOLERANCES, compare_logits, describe_logits
from engine.tiny_models import ALL_KINDS, SPECS

from .helpers import (PROMPTS, TOKENIZER_STRINGS, agreement, failed_checks, llama, llama_logits,
                      llama_tokenize, mlx_logits, rel_diff)

SPM_KINDS = {"llama2", "phi3"}  # SentencePiece with a space prefix (see the divergence test)


def _special_string(kind: str, tok) -> str:
    """The model's own special and turn tokens in a sentence."""
    specials = [t for t in tok.all_special_tokens if t not in ("<unk>",)]
    specials += [SPECS[kind].eos_token]
    return "x " + " y ".join(dict.fromkeys(specials)) + " z"


def _field_str(reader, key: str) -> str:
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_f32_export_loads_in_llama_cpp_as_trained(kind, tiny_model, tmp_path):
    folder = tiny_model(kind)
    out = tmp_path / f"{kind}.gguf"
    result = export_gguf(folder, out, "f32")
    assert result.verification["passed"], failed_checks(result.verification)
    assert json.loads(record_path(out).read_text())["verification"]["passed"]

    tok = AutoTokenizer.from_pretrained(str(folder))
    llm = llama(out)
    try:
        for s in TOKENIZER_STRINGS:
            assert llama_tokenize(llm, s) == tok.encode(s), s
        special = _special_string(kind, tok)
        want, got = tok.encode(special), llama_tokenize(llm, special)
        if kind in SPM_KINDS:
            # llama.cpp adds SentencePiece's space prefix after special tokens (see below)
            space = tok.convert_tokens_to_ids("\u2581")
            want, got = [t for t in want if t != space], [t for t in got if t != space]
        assert got == want, special
        token_lists = [tok.encode(p) for p in PROMPTS]
        ours = [llama_logits(llm, t) for t in token_lists]
    finally:
        llm.close()
    ref = mlx_logits(folder, token_lists)
    same, total = agreement(ref, ours)
    assert same == total
    assert rel_diff(ref, ours) < 1e-3

    reader = gguf.GGUFReader(str(out))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert _field_str(reader, "tokenizer.chat_template") == cfg["chat_template"]
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert eos == tok.convert_tokens_to_ids(SPECS[kind].eos_token)
    n_tokens = len(reader.fields["tokenizer.ggml.tokens"].data)
    embd = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert n_tokens == int(embd.shape[1])
    expected_model = "llama" if kind in ("llama2", "phi3", "gemma", "gemma2", "gemma3") else "gpt2"
    assert _field_str(reader, "tokenizer.ggml.model") == expected_model


def test_sentencepiece_space_prefix_is_as_in_training(tiny_model, tmp_path):
    """llama.cpp (like the sentencepiece library) adds its "▁" prefix before leading spaces and
    after special tokens; Hugging Face's Metaspace(prepend_scheme="first") does not. Training
    now uses the tokenizer faithful to tokenizer.model (engine/models/tokenizer.py), so the
    corpus check finds no difference left to record, leading spaces included."""
    import sentencepiece

    folder = tiny_model("llama2")
    out = tmp_path / "llama2.gguf"
    result = export_gguf(folder, out, "f32")
    checks = {c["name"]: c for c in result.verification["checks"]}
    assert checks["llama.cpp tokenization"]["passed"], checks["llama.cpp tokenization"]
    assert "leading whitespace" not in checks  # nothing recorded as a space-prefix difference
    sp = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    llm = llama(out)
    try:
        # llama.cpp agrees with SentencePiece itself on the leading-space case
        assert llama_tokenize(llm, "  two")[1:] == sp.encode("  two")
    finally:
        llm.close()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_f16_differs_only_by_what_f16_weight_rounding_explains(kind, tiny_model, tmp_path):
    folder = tiny_model(kind)
    out = tmp_path / f"{kind}-f16.gguf"
    result = export_gguf(folder, out, "f16")
    assert result.verification["passed"], failed_checks(result.verification)
    tok = AutoTokenizer.from_pretrained(str(folder))
    token_lists = [tok.encode(p) for p in PROMPTS]
    llm = llama(out)
    try:
        ours = [llama_logits(llm, t) for t in token_lists]
    finally:
        llm.close()
    exact = mlx_logits(folder, token_lists)
    rounded = mlx_logits(folder, token_lists,
                         weight_fn=lambda w: w.astype(mx.float16).astype(mx.float32))
    rounding = rel_diff(exact, rounded)  # what F16 weights alone change, in MLX
    assert rel_diff(rounded, ours) < 1e-3 + 0.5 * rounding  # llama.cpp ≈ MLX on the same weights
    assert rel_diff(exact, ours) < 3 * rounding + 1e-3
    same, total = agreement(exact, ours)
    assert same / total >= 0.98


def _tensor_bytes(path: Path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, np.asarray(t.data).view(np.uint8).tobytes())
            for t in gguf.GGUFReader(str(path)).tensors}


def test_q8_0_next_token_agrees_on_98_percent_of_positions(tiny_model, tmp_path):
    same = total = 0
    per_kind = {}
    for kind in ALL_KINDS:
        folder = tiny_model(kind)
        out = tmp_path / f"{kind}-q8.gguf"
        result = export_gguf(folder, out, "q8_0", verify=False)
        types = {t["type"] for t in result.tensors}
        assert "Q8_0" in types
        # The file is exactly llama.cpp's own Q8_0 of the F32 model, so any flipped argmax
        # below is what Q8_0 itself does to this model, not an export error.
        f32 = export_gguf(folder, tmp_path / f"{kind}-f32.gguf", "f32", verify=False).path
        reference = tmp_path / f"{kind}-llama-cpp-q8.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = 7  # LLAMA_FTYPE_MOSTLY_Q8_0
        assert llama_cpp.llama_model_quantize(str(f32).encode(), str(reference).encode(),
                                              ctypes.byref(params)) == 0
        assert _tensor_bytes(out) == _tensor_bytes(reference), kind
        tok = AutoTokenizer.from_pretrained(str(folder))
        token_lists = [tok.encode(p) for p in PROMPTS]
        llm = llama(out)
        try:
            ours = [llama_logits(llm, t) for t in token_lists]
        finally:
            llm.close()
        stats = compare_logits(mlx_logits(folder, token_lists), ours, TOLERANCES["q8_0"])
        per_kind[kind] = stats["agreement"]
        same += stats["positions"] - stats["differing"]
        total += stats["positions"]
        # and each position that flips was a near-tie in MLX, not a clear winner
        assert stats["passed"], (kind, describe_logits(stats, TOLERANCES["q8_0"]))
    # Random tiny models have flat next-token distributions (top-2 gaps ~0.1 logit), so a few
    # positions per model flip under 8-bit rounding of weights and activations (llama3: 92.6%
    # with an F32 KV cache); the byte-identity above shows llama.cpp's own Q8_0 flips the same.
    assert same / total >= 0.98, per_kind
