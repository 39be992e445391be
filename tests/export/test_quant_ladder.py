"""The whole quantization ladder against llama.cpp's own quantizer, file by file.

Same F16 source for both: Tailor's GGUF of a tiny model in file type X must hold, tensor by
tensor, the type and the bytes `llama_model_quantize` writes for X from Tailor's F16 GGUF.
That checks the encoders and llama.cpp's per-tensor mixture (which tensors get a larger
type on which layers, the fallbacks of rows that do not divide into 256-value blocks).

Models: 256 wide with 8 layers (K-quants apply; 8 layers make the layer rules of
`use_more_bits`, `i < n/8` and `i < 2` pick some layers and not others) and the 64-wide
defaults (every 256-block type falls back).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from engine.export.gguf_export import export_gguf
from engine.export.quant_types import QUANT_BY_NAME
from engine.tiny_models import cached_tiny_model

from .helpers import assert_same_tensors, f16_copy, quiet_fd2

WIDE = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 8}


def _f16_model(kind: str, wide: bool, folder: Path) -> Path:
    base = cached_tiny_model(kind, **WIDE) if wide else cached_tiny_model(kind)
    return f16_copy(base, folder)


def assert_same_as_llama_cpp(m16: Path, quant: str, tmp_path: Path) -> dict[str, str]:
    """Export `m16` as `quant` and compare with llama.cpp's quantizer; returns name -> type."""
    llama_cpp = pytest.importorskip("llama_cpp")
    f16 = tmp_path / f"{m16.name}-f16.gguf"
    if not f16.exists():
        export_gguf(m16, f16, "f16", verify=False)
    ours = export_gguf(m16, tmp_path / f"{m16.name}-{quant}.gguf", quant, verify=False)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_BY_NAME[quant].ftype
    params.nthread = 2
    reference = tmp_path / f"{m16.name}-{quant}-llama.gguf"
    with quiet_fd2():
        status = llama_cpp.llama_model_quantize(str(f16).encode(), str(reference).encode(),
                                                ctypes.byref(params))
    assert status == 0
    return assert_same_tensors(ours.path, reference, quant)


LEGACY = ["q4_1", "q5_0", "q5_1"]


@pytest.mark.parametrize("kind,wide", [("llama3", True), ("qwen2", False), ("phi3", True),
                                       ("gemma3", False)])
def test_legacy_types_are_byte_identical_to_llama_cpp(kind, wide, tmp_path):
    m16 = _f16_model(kind, wide, tmp_path / f"{kind}-m16")
    for quant in LEGACY:
        types = assert_same_as_llama_cpp(m16, quant, tmp_path)
        assert quant.upper() in set(types.values())


@pytest.mark.parametrize("kind,wide", [("llama3", True), ("qwen3", True), ("gemma", False)])
def test_small_k_quant_mixtures_are_byte_identical_to_llama_cpp(kind, wide, tmp_path):
    """Q4_K_S: attn_v Q5_K on the first 4 layers, ffn_down Q5_K below n/8; Q5_K_S: none."""
    m16 = _f16_model(kind, wide, tmp_path / f"{kind}-m16")
    for quant in ("q4_k_s", "q5_k_s"):
        types = assert_same_as_llama_cpp(m16, quant, tmp_path)
        if wide:
            assert types["blk.3.attn_v.weight"] == "Q5_K"
            assert types["blk.4.attn_v.weight"] == quant[:2].upper() + "_K"


LOW_K = ["q2_k", "q3_k_s", "q3_k_m", "q3_k_l"]


@pytest.mark.parametrize("kind,wide,quants", [
    ("llama3", True, LOW_K),           # the layer rules: Q3_K_M attn_v Q5_K on layers 0-1
    ("gemma", True, ["q2_k"]),         # 4 query heads on 1 KV head: Q2_K attn_v Q4_K
    ("phi3", True, ["q3_k_m"]),        # the fused attn_qkv counts as attn_v
    ("qwen2", False, ["q2_k", "q3_k_l"])],  # 64 wide: Q2_K/Q3_K -> Q4_0, Q5_K -> Q5_1
    ids=["llama3", "gemma", "phi3", "qwen2-64"])
def test_2_and_3_bit_k_quants_are_byte_identical_to_llama_cpp(kind, wide, quants, tmp_path):
    m16 = _f16_model(kind, wide, tmp_path / f"{kind}-m16")
    types = {quant: assert_same_as_llama_cpp(m16, quant, tmp_path) for quant in quants}
    if kind == "llama3":
        for quant in LOW_K:
            assert types[quant]["blk.0.ffn_gate.weight"] == ("Q2_K" if quant == "q2_k"
                                                             else "Q3_K")
        assert types["q2_k"]["blk.0.attn_v.weight"] == "Q3_K"
        assert types["q3_k_m"]["blk.1.attn_v.weight"] == "Q5_K"
        assert types["q3_k_m"]["blk.2.attn_v.weight"] == "Q4_K"
    elif kind == "gemma":
        assert types["q2_k"]["blk.0.attn_v.weight"] == "Q4_K"
    elif kind == "qwen2":
        assert types["q2_k"]["blk.0.ffn_gate.weight"] == "Q4_0"


@pytest.mark.parametrize("kind,wide,quants", [
    ("llama3", True, ["iq4_nl", "iq4_xs"]),  # ffn_down Q5_K below n/8 (layer 0 of 8)
    ("gemma3", True, ["iq4_nl"]),            # 4 query heads on 1 KV head: attn_v Q5_K
    ("qwen2", False, ["iq4_xs"])],           # 64 wide: IQ4_XS -> IQ4_NL
    ids=["llama3", "gemma3", "qwen2-64"])
def test_iq4_types_are_byte_identical_to_llama_cpp(kind, wide, quants, tmp_path):
    m16 = _f16_model(kind, wide, tmp_path / f"{kind}-m16")
    types = {quant: assert_same_as_llama_cpp(m16, quant, tmp_path) for quant in quants}
    if kind == "llama3":
        assert types["iq4_xs"]["blk.0.ffn_down.weight"] == "Q5_K"
        assert types["iq4_xs"]["blk.1.ffn_down.weight"] == "IQ4_XS"
        assert types["iq4_nl"]["blk.1.attn_v.weight"] == "IQ4_NL"
    elif kind == "gemma3":
        assert types["iq4_nl"]["blk.1.attn_v.weight"] == "Q5_K"
    else:
        assert types["iq4_xs"]["blk.0.ffn_gate.weight"] == "IQ4_NL"
