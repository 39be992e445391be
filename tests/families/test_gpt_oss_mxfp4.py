"""gpt-oss's MXFP4 experts written as MXFP4 (issue 17): file type MOSTLY_MXFP4_MOE, the 3-D
expert tensors in GGML's MXFP4 blocks and everything else Q8_0 as llama.cpp's quantizer does,
byte for byte; from an MXFP4 checkpoint the untouched experts are the checkpoint's own blocks
as llama.cpp's converter repacks them; verified in llama.cpp."""
from __future__ import annotations


import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from engine.export.gguf_export import export_gguf
from engine.tiny_models import cached_tiny_model
from engine.export.kquants_llamacpp import llama_cpp_quantize
from tests.export.helpers import assert_same_tensors, f16_copy, failed_checks

T = gguf.GGMLQuantizationType


def _tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def _field(path, key):
    return gguf.GGUFReader(str(path)).fields[key].parts[-1][0]


@pytest.mark.parametrize("kind", ["gpt_oss", "qwen3_moe", "smollm3"])
def test_mxfp4_moe_is_byte_identical_to_llama_cpp_quantize(kind, tmp_path):
    """Same F16 source, Tailor's MXFP4_MOE file vs llama_model_quantize's (ftype 38): experts
    MXFP4, attention / embeddings / output Q8_0, router and norms F32; a model without
    experts is all Q8_0."""
    m16 = f16_copy(cached_tiny_model(kind), tmp_path / "m16")
    export_gguf(m16, tmp_path / "f16.gguf", "f16", verify=False)
    ours = export_gguf(m16, tmp_path / "ours.gguf", "mxfp4_moe", verify=False)
    llama_cpp_quantize(tmp_path / "f16.gguf", tmp_path / "ref.gguf",
                       38)  # LLAMA_FTYPE_MOSTLY_MXFP4_MOE
    assert_same_tensors(ours.path, tmp_path / "ref.gguf", f"{kind} mxfp4_moe")
    a = _tensors(ours.path)
    assert int(_field(ours.path, "general.file_type")) == 38
    types = {t.tensor_type for t in a.values()}
    assert (T.MXFP4 in types) == (kind != "smollm3")
    if kind != "smollm3":
        assert a["blk.0.ffn_down_exps.weight"].tensor_type == T.MXFP4
        assert a["blk.0.ffn_gate_inp.weight"].tensor_type == T.F32
        assert a["blk.0.attn_q.weight"].tensor_type == T.Q8_0


def _converter_repack(blocks: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """llama.cpp's converter (conversion/gpt_oss.py repack_mxfp4): per 32 values one e8m0
    byte, then 16 bytes with value j in the low and value j + 16 in the high nibble (the
    checkpoint holds values 2j and 2j + 1 in one byte)."""
    codes = np.empty(blocks.shape[:-1] + (32,), np.uint8)
    codes[..., 0::2], codes[..., 1::2] = blocks & 0x0F, blocks >> 4
    qs = codes[..., :16] | (codes[..., 16:] << 4)
    return np.concatenate([scales[..., None], qs], axis=-1).reshape(*blocks.shape[:2], -1)


def test_mxfp4_checkpoint_experts_are_its_own_blocks_and_verify(tmp_path):
    """The MXFP4 checkpoint's experts, exported as MXFP4_MOE, are exactly the blocks llama.cpp's
    converter writes from the checkpoint (gate / up de-interleaved), and the file is
    verified in llama.cpp."""
    folder = cached_tiny_model("gpt_oss_mxfp4")
    result = export_gguf(folder, tmp_path / "oss.gguf", "mxfp4_moe")
    assert result.verification["passed"], failed_checks(result.verification)
    ckpt = load_file(str(folder / "model.safetensors"))
    got = _tensors(result.path)
    for layer in (0, 1):
        p = f"model.layers.{layer}.mlp.experts."
        gu_b, gu_s = ckpt[p + "gate_up_proj_blocks"], ckpt[p + "gate_up_proj_scales"]
        want = {"gate": _converter_repack(gu_b[:, 0::2], gu_s[:, 0::2]),
                "up": _converter_repack(gu_b[:, 1::2], gu_s[:, 1::2]),
                "down": _converter_repack(ckpt[p + "down_proj_blocks"],
                                          ckpt[p + "down_proj_scales"])}
        for proj, blocks in want.items():
            t = got[f"blk.{layer}.ffn_{proj}_exps.weight"]
            assert t.tensor_type == T.MXFP4
            assert np.array_equal(np.asarray(t.data).view(np.uint8).reshape(blocks.shape),
                                  blocks), (layer, proj)


def test_expert_lora_on_the_mxfp4_checkpoint_exports_as_mxfp4_moe(tmp_path):
    """A LoRA on every linear layer (the experts included) of the MXFP4 checkpoint, fused: the
    changed experts are encoded to MXFP4 again, the file verified in llama.cpp against MLX on
    the file's own rounded weights (the MoE check)."""
    from .chain import trained

    folder = cached_tiny_model("gpt_oss_mxfp4")
    info = trained(folder, tmp_path, "oss-mx", learning_rate=3e-3, targets="all-linear")
    result = export_gguf(info.name, tmp_path / "oss-lora.gguf", "mxfp4_moe")
    assert result.verification["passed"], failed_checks(result.verification)
    check = next(c for c in result.verification["checks"]
                 if c["name"] == "llama.cpp next token = MLX")
    assert check["rounded_reference"]["left_unrounded"] == 0
    assert _tensors(result.path)["blk.1.ffn_up_exps.weight"].tensor_type == T.MXFP4
