"""Qwen3-MoE, Mixtral, Granite MoE, Granite 4 hybrid with experts and gpt-oss end to end (issue 17): LoRA on the expert layers (mlx-lm's switch
layers) trained, fused and exported; the experts stacked into llama.cpp's ``*_exps`` tensors
(from the Hugging Face per-expert layout of the base and the stacked layout of a fused folder),
the router kept F32 in every export, the quantization mixture byte for byte llama.cpp's own."""
from __future__ import annotations

import json

import gguf
import mlx.core as mx
import numpy as np
import pytest

from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from engine.fuse import fuse_adapter
from engine.tiny_models import cached_tiny_model
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import edited_copy
from engine.export.kquants_llamacpp import llama_cpp_quantize
from tests.export.helpers import assert_same_tensors, failed_checks, f16_copy
from tests.train.conftest import write_toy_chat

from .chain import exact_fused_f32, fused_f32_figures, ollama_renders_as_jinja, trained

MOE = ["qwen3_moe", "mixtral", "granitemoe", "gpt_oss", "granitemoehybrid_moe"]
EXPERTS = {"qwen3_moe": "mlp", "mixtral": "block_sparse_moe", "granitemoe": "block_sparse_moe",
           "gpt_oss": "mlp", "granitemoehybrid_moe": "block_sparse_moe"}
# where mlx-lm keeps the stacked experts (gpt-oss's checkpoint has them stacked already)
STACK = {"gpt_oss": "experts"}


def _base_experts(kind: str, base_w: dict, layer: int, proj: str) -> np.ndarray:
    """[experts, rows, cols] of the base checkpoint, from its Hugging Face layout."""
    prefix = f"model.layers.{layer}.{EXPERTS[kind]}"
    if kind == "gpt_oss":
        return np.array(base_w[f"{prefix}.experts.{proj}_proj.weight"])
    if kind in ("granitemoe", "granitemoehybrid_moe"):  # stacked, gate and up in one
        if proj == "down":
            return np.array(base_w[f"{prefix}.output_linear.weight"])
        both = np.array(base_w[f"{prefix}.input_linear.weight"])
        half = both.shape[1] // 2
        return both[:, :half] if proj == "gate" else both[:, half:]
    name = {"gate": "w1", "up": "w3", "down": "w2"}[proj] if kind == "mixtral" \
        else f"{proj}_proj"
    return np.stack([np.array(base_w[f"{prefix}.experts.{e}.{name}.weight"]) for e in range(8)])


def _tensors(path) -> dict:
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("kind", MOE)
def test_expert_lora_trained_fused_stacked_and_verified(kind, tiny_model, tmp_path):
    model_dir = tiny_model(kind)
    info = trained(model_dir, tmp_path, f"{kind}-lora", learning_rate=3e-3)
    keys = json.loads((info.path / "adapter_config.json").read_text())["lora_parameters"]["keys"]
    stack = f"{EXPERTS[kind]}.{STACK.get(kind, 'switch_mlp')}"
    assert f"{stack}.gate_proj" in keys  # all-linear reaches the experts

    exact_fused_f32(kind, model_dir, info, tmp_path / f"{kind}-f32.gguf")

    # the LoRA changed the fused experts, and the GGUF's stacked tensors are exactly those
    fused = fuse_adapter(info.name, tmp_path / "fused")
    fused_w = mx.load(str(next(fused.glob("*.safetensors"))))
    base_w = mx.load(str(model_dir / "model.safetensors"))
    tensors = _tensors(tmp_path / f"{kind}-f32.gguf")
    for layer in (0, 1):
        for proj in ("gate", "up", "down"):
            name = f"model.layers.{layer}.{stack}.{proj}_proj.weight"
            ours = np.array(fused_w[name])
            base = _base_experts(kind, base_w, layer, proj)
            assert np.abs(ours - base).max() > 1e-4, name  # the adapter reached the experts
            stacked = np.asarray(tensors[f"blk.{layer}.ffn_{proj}_exps.weight"].data)
            assert stacked.shape == ours.shape
            assert np.array_equal(stacked, ours), name
        assert tensors[f"blk.{layer}.ffn_gate_inp.weight"].tensor_type == \
            gguf.GGMLQuantizationType.F32

    # the fused folder (stacked layout) exports as the base's per-expert layout does
    again = export_gguf(fused, tmp_path / "from-fused.gguf", "f32")
    assert again.verification["passed"], failed_checks(again.verification)
    # LoRA on expert tensors as an adapter GGUF (llama.cpp applies it through mul_mat_id)
    lora = export_gguf(info.name, tmp_path / f"{kind}-lora.gguf", "f32", adapter_only=True)
    assert lora.verification["passed"], failed_checks(lora.verification)
    assert "blk.0.ffn_gate_exps.weight.lora_a" in _tensors(lora.path)
    f16 = export_gguf(info.name, tmp_path / f"{kind}-f16.gguf", "f16")
    assert f16.verification["passed"], failed_checks(f16.verification)
    assert _tensors(f16.path)["blk.0.ffn_gate_inp.weight"].tensor_type == \
        gguf.GGMLQuantizationType.F32


@pytest.mark.parametrize("kind,quant", [("qwen3_moe", "q4_k_m"), ("mixtral", "q4_k_m"),
                                        ("mixtral", "q8_0"), ("granitemoe", "q4_k_m"),
                                        ("gpt_oss", "q4_k_m"), ("qwen3_5_moe", "q4_k_m"),
                                        ("qwen3_next", "q4_k_m")])
def test_moe_quant_mixture_is_byte_identical_to_llama_cpp_quantize(kind, quant, tmp_path):
    """Same F16 source, Tailor's file vs llama_model_quantize's: the router never quantized,
    the 8-expert rules (attn_k / attn_v Q8_0, attn_output Q5_K), the stacked experts encoded
    as llama.cpp encodes them. 256 wide, so K-quants apply where rows allow."""
    base = cached_tiny_model(kind, hidden_size=256, intermediate_size=512)
    m16 = f16_copy(base, tmp_path / "m16")
    export_gguf(m16, tmp_path / "f16.gguf", "f16", verify=False)
    ours = export_gguf(m16, tmp_path / "ours.gguf", quant, verify=False)
    llama_cpp_quantize(tmp_path / "f16.gguf", tmp_path / "ref.gguf",
                       {"q4_k_m": 15, "q8_0": 7}[quant])
    assert_same_tensors(ours.path, tmp_path / "ref.gguf", f"{kind} {quant}")
    a = _tensors(ours.path)
    T = gguf.GGMLQuantizationType
    assert a["blk.0.ffn_gate_inp.weight"].tensor_type == T.F32
    # (Qwen3.5-MoE's first layers are linear attention: the first attention layer's tensors)
    attn_k = next(n for n in sorted(a) if n.endswith("attn_k.weight"))
    assert a[attn_k].tensor_type == T.Q8_0
    if quant == "q4_k_m":
        assert a["blk.0.ffn_gate_exps.weight"].tensor_type == T.Q4_K
        # 8 experts: Q5_K (Qwen3-MoE's 128-wide rows: its Q5_1 fallback), not Q4_K
        out = a[attn_k.replace("attn_k", "attn_output")]
        assert out.tensor_type == (T.Q5_K if out.shape[0] % 256 == 0 else T.Q5_1)


@pytest.mark.parametrize("kind", MOE)
def test_ollama_template_renders_the_jinja_prompt(kind, tiny_model):
    ollama_renders_as_jinja(tiny_model(kind))


def test_dora_on_expert_layers_is_refused_before_training(tiny_model, tmp_path):
    data = write_toy_chat(tmp_path / "toy.jsonl", n=8)
    with pytest.raises(TailorError) as e:
        train_adapter(str(tiny_model("qwen3_moe")), data, "dora-moe", make_config(
            iters=2, eval_every=0, method="dora", baseline_prompts=0))
    assert "DoRA cannot train the expert layers" in e.value.message
    assert "--targets attention" in e.value.hint


def test_qwen3_moe_with_dense_layers_is_refused(tiny_model, tmp_path):
    odd = edited_copy(tiny_model("qwen3_moe"), tmp_path / "odd", config={
        "mlp_only_layers": [1]})
    with pytest.raises(TailorError, match="dense layers among its expert layers"):
        export_gguf(odd, tmp_path / "odd.gguf", "f32")
    assert not (tmp_path / "odd.gguf").exists()


def test_gpt_oss_mxfp4_checkpoint_trains_fuses_and_exports(tiny_model, tmp_path):
    """gpt-oss as OpenAI ships it: MXFP4 experts (blocks, e8m0 scales, gate and up
    interleaved). mlx-lm reads them as MLX's mxfp4 mode, so the base trains as QLoRA; the
    base itself and the fused adapter export through MLX's dequantization and answer in
    llama.cpp as MLX does."""
    from engine.tiny_models import MXFP4_VALUES, mxfp4_blocks

    # the fixture's encoding is the format's: values on the grid come back exactly, the even
    # one of each pair in the low nibble, the scale as 2^(e - 127)
    grid = np.asarray(MXFP4_VALUES, np.float32)
    blocks, scales = mxfp4_blocks(np.tile(grid, 2)[None, :] * 4.0)
    assert scales.tolist() == [[129]]
    decoded = np.empty(32, np.float32)
    decoded[0::2], decoded[1::2] = grid[blocks[0, 0] & 15], grid[blocks[0, 0] >> 4]
    assert np.array_equal(decoded * 4.0, np.tile(grid, 2) * 4.0)

    model_dir = tiny_model("gpt_oss_mxfp4")
    base = export_gguf(model_dir, tmp_path / "base.gguf", "f32")
    assert base.verification["passed"], failed_checks(base.verification)
    info = trained(model_dir, tmp_path, "oss-qlora", learning_rate=3e-3)
    fig = fused_f32_figures("gpt_oss_mxfp4", model_dir, info, tmp_path / "fused.gguf")
    assert fig.tokens_identical and fig.adapter_moved > 1e-2
    # MLX runs the MXFP4 experts in bfloat16, so MLX + adapter itself differs from the fused
    # float32 weights by ~2% (enough to flip a near-tied position); against MLX on those fused
    # weights llama.cpp is within 1e-3 and picks the same token at every position.
    from transformers import AutoTokenizer

    from engine.export.verify import llama_logits, mlx_logits, open_llama
    from tests.export.helpers import PROMPTS, rel_diff

    fused = fuse_adapter(info.name, tmp_path / "fused-folder")
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    token_lists = [tok.encode(p) for p in PROMPTS]
    llm = open_llama(tmp_path / "fused.gguf")
    try:
        ours = [llama_logits(llm, t) for t in token_lists]
    finally:
        llm.close()
    reference = mlx_logits(fused, token_lists)
    assert rel_diff(reference, ours) < 1e-3
    assert all(np.array_equal(np.argmax(r, -1), np.argmax(o, -1))
               for r, o in zip(reference, ours))
    assert fig.max_rel_diff < 0.05


def test_qwen3_5_moe_hybrid_layers_and_experts(tiny_model, tmp_path):
    """Qwen3.5-MoE: the Qwen3.5 hybrid layers with routed experts (stacked gate_up in the
    checkpoint) and a gated shared expert. Expert LoRA trained and fused; the GGUF's stacked
    experts equal the fused ones; routers F32; the adapter alone as a GGUF LoRA verified."""
    model_dir = tiny_model("qwen3_5_moe")
    info = trained(model_dir, tmp_path, "q35moe", learning_rate=3e-3)
    exact_fused_f32("qwen3_5_moe", model_dir, info, tmp_path / "f32.gguf")
    fused = fuse_adapter(info.name, tmp_path / "fused")
    fused_w = {}
    for f in fused.glob("*.safetensors"):
        fused_w.update(mx.load(str(f)))
    base_w = mx.load(str(model_dir / "model.safetensors"))
    tensors = _tensors(tmp_path / "f32.gguf")
    ours = np.array(fused_w["language_model.model.layers.0.mlp.switch_mlp.gate_proj.weight"])
    base = np.array(base_w["model.layers.0.mlp.experts.gate_up_proj"])[:, :ours.shape[1]]
    assert np.abs(ours - base).max() > 1e-4  # the adapter reached the experts
    assert np.array_equal(np.asarray(tensors["blk.0.ffn_gate_exps.weight"].data), ours)
    T = gguf.GGMLQuantizationType
    q8 = export_gguf(info.name, tmp_path / "q8.gguf", "q8_0", verify=False)
    q8_tensors = _tensors(q8.path)
    for name in ("blk.0.ffn_gate_inp.weight", "blk.0.ffn_gate_inp_shexp.weight",
                 "blk.0.ssm_conv1d.weight"):
        assert q8_tensors[name].tensor_type == T.F32, name
    lora = export_gguf(info.name, tmp_path / "lora.gguf", "f32", adapter_only=True)
    assert lora.verification["passed"], failed_checks(lora.verification)


def test_qwen3_next_fused_qkvz_split_trained_and_verified(tiny_model, tmp_path):
    """Qwen3-Next: Gated DeltaNet with the fused in_proj_qkvz ([q, k, v, z] per key head) that
    llama.cpp wants as attn_qkv + attn_gate, per-expert checkpoint tensors and a gated shared
    expert. Base and trained-fused F32 answer as MLX; the adapter alone is refused with why."""
    model_dir = tiny_model("qwen3_next")
    base = export_gguf(model_dir, tmp_path / "base.gguf", "f32")
    assert base.verification["passed"], failed_checks(base.verification)
    info = trained(model_dir, tmp_path, "q3next", learning_rate=3e-3)
    exact_fused_f32("qwen3_next", model_dir, info, tmp_path / "f32.gguf")
    with pytest.raises(TailorError) as e:
        export_gguf(info.name, tmp_path / "lora.gguf", "f32", adapter_only=True)
    assert "in_proj_qkvz" in e.value.message and "leave out --adapter-only" in e.value.hint
