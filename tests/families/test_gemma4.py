"""Gemma 4 (text) end to end (issue 17): the E2B-style fixture (per-layer embeddings, shared-KV
layers with double-wide MLPs, sliding / full layers with their own head sizes, proportional
rope, softcapping, Gemma 4's tokenizer kind and chat template) and the 31B-style one (full
layers with K = V and their own KV heads), each trained a few steps with LoRA, fused, exported
to F32 and Q8_0 and checked in llama.cpp, its adapter alone as a GGUF LoRA applied by
llama.cpp, its Ollama template rendering what the Jinja template renders."""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from engine.events import TailorError
from engine.export.gguf_export import export_gguf
from engine.tiny_models import FAMILY_SPECS
from tests.conftest import edited_copy
from tests.export.helpers import failed_checks

from .chain import field_str, ollama_renders_as_jinja, whole_chain_verified

KINDS = ["gemma4", "gemma4_31b", "gemma4_mm", "gemma4_moe"]


@pytest.mark.parametrize("kind", KINDS)
def test_trained_fused_exported_and_verified_in_llama_cpp(kind, tiny_model, tmp_path):
    # 3e-3 as for gpt-oss and Qwen3.5: at 1e-2 the trained fixture's logits move so far that
    # llama.cpp's fp16-table GELU alone exceeds the 1e-3 bar (measured: /work/notes/s4/gemma4.md)
    whole_chain_verified(kind, tiny_model(kind), tmp_path, learning_rate=3e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_ollama_template_renders_the_jinja_prompt(kind, tiny_model):
    ollama_renders_as_jinja(tiny_model(kind))


def test_gemma4_metadata_and_tensors_are_llama_cpps(tiny_model, tmp_path):
    """The keys llama.cpp's gemma4 reads per layer type, the gemma4 tokenizer, the proportional
    rope table, the per-layer embedding tensors, and no K/V for the shared-KV layers."""
    out = tmp_path / "g4.gguf"
    export_gguf(tiny_model("gemma4"), out, "f32", verify=False)
    reader = gguf.GGUFReader(str(out))

    def value(key):
        f = reader.fields[key]
        return [f.parts[i].tolist()[0] for i in f.data] if len(f.data) > 1 else \
            f.parts[-1].tolist()[0]

    cfg = FAMILY_SPECS["gemma4"].config
    assert field_str(reader, "tokenizer.ggml.model") == "gemma4"
    assert value("gemma4.attention.key_length") == 32
    assert value("gemma4.attention.key_length_swa") == 16
    assert value("gemma4.rope.dimension_count") == 32
    assert value("gemma4.rope.dimension_count_swa") == 16
    assert value("gemma4.rope.freq_base") == 1e6 and value("gemma4.rope.freq_base_swa") == 1e4
    assert value("gemma4.attention.sliding_window_pattern") == [
        t == "sliding_attention" for t in cfg["layer_types"]]
    assert value("gemma4.attention.shared_kv_layers") == 3
    assert value("gemma4.embedding_length_per_layer_input") == 8
    assert value("gemma4.feed_forward_length") == [128, 128, 128, 256, 256, 256]
    assert value("gemma4.final_logit_softcapping") == 30.0
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    # a quarter of the 32-wide full heads rotated: 4 pairs at factor 1, 12 pairs not rotated
    assert np.array_equal(tensors["rope_freqs.weight"],
                          np.asarray([1.0] * 4 + [1e30] * 12, dtype=np.float32))
    assert {"per_layer_token_embd.weight", "per_layer_model_proj.weight",
            "per_layer_proj_norm.weight", "blk.0.inp_gate.weight", "blk.0.proj.weight",
            "blk.0.post_norm.weight", "blk.0.layer_output_scale.weight"} <= set(tensors)
    assert "blk.2.attn_k.weight" in tensors and "blk.3.attn_k.weight" not in tensors
    assert "output.weight" not in tensors  # tied


def test_gemma4_k_eq_v_layers_carry_their_kv_heads(tiny_model, tmp_path):
    out = tmp_path / "g4-31b.gguf"
    export_gguf(tiny_model("gemma4_31b"), out, "f32", verify=False)
    reader = gguf.GGUFReader(str(out))
    f = reader.fields["gemma4.attention.head_count_kv"]
    assert [f.parts[i].tolist()[0] for i in f.data] == [2, 2, 1, 2, 2, 1]
    names = {t.name for t in reader.tensors}
    assert "blk.2.attn_v.weight" not in names and "blk.1.attn_v.weight" in names


def test_gemma4_shared_kv_that_llama_cpp_reads_elsewhere_is_refused(tiny_model, tmp_path):
    """llama.cpp gives a shared sliding layer the KV of the second-to-last full-KV layer and a
    shared full layer the last one's; mlx-lm the last of each type. With the last two full-KV
    layers in the other order the file would load and answer differently: refused, nothing
    written."""
    odd = edited_copy(tiny_model("gemma4"), tmp_path / "odd", config={"layer_types": [
        "sliding_attention", "full_attention", "sliding_attention", "sliding_attention",
        "sliding_attention", "full_attention"]})
    with pytest.raises(TailorError) as e:
        export_gguf(odd, tmp_path / "odd.gguf", "f32")
    assert "shared-KV" in e.value.message and str(odd) in e.value.message
    assert not (tmp_path / "odd.gguf").exists()


def test_gemma4_experts_trained_fused_stacked_and_router_kept(tiny_model, tmp_path):
    """26B-A4B style: LoRA reaches the experts; the fused folder's experts (mlx-lm's separate
    gate / up) are written as llama.cpp's one gate_up tensor equal to the fused MLX experts;
    the router, its input scale and the per-expert scales stay F32 in a quantized file."""
    from safetensors.numpy import load_file

    from engine.fuse import fuse_adapter
    from .chain import trained

    info = trained(tiny_model("gemma4_moe"), tmp_path, "g4-moe", learning_rate=3e-3)
    fused = fuse_adapter(info.name, tmp_path / "fused")
    out = export_gguf(fused, tmp_path / "fused.gguf", "f32")
    assert out.verification["passed"], failed_checks(out.verification)
    fused_w = load_file(str(next(fused.glob("*.safetensors"))))
    base_w = load_file(str(tiny_model("gemma4_moe") / "model.safetensors"))
    tensors = {t.name: t for t in gguf.GGUFReader(str(out.path)).tensors}
    for layer in range(6):
        p = f"model.layers.{layer}.experts."
        gate_up = np.concatenate([fused_w[p + "switch_glu.gate_proj.weight"],
                                  fused_w[p + "switch_glu.up_proj.weight"]], axis=1)
        assert np.abs(gate_up - base_w[p + "gate_up_proj"]).max() > 1e-4  # LoRA reached them
        assert np.array_equal(np.asarray(tensors[f"blk.{layer}.ffn_gate_up_exps.weight"].data),
                              gate_up)
    q8 = export_gguf(info.name, tmp_path / "q8.gguf", "q8_0")
    assert q8.verification["passed"], failed_checks(q8.verification)
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(str(q8.path)).tensors}
    for name in ("ffn_gate_inp.weight", "ffn_gate_inp.scale", "ffn_down_exps.scale"):
        assert types[f"blk.0.{name}"] == gguf.GGMLQuantizationType.F32, name
    assert types["blk.0.ffn_gate_up_exps.weight"] == gguf.GGMLQuantizationType.Q8_0


def test_expert_adapter_needs_the_per_expert_scale_folded_in(tiny_model, tmp_path,
                                                              monkeypatch):
    """llama.cpp scales the base experts' output by the per-expert scale before it adds the
    LoRA, mlx-lm scales both: the adapter GGUF folds the scale into the down projection's B.
    Without it the file loads and answers differently, and the adapter check says so."""
    import engine.export.gemma4 as gemma4
    from .chain import trained

    info = trained(tiny_model("gemma4_moe"), tmp_path, "g4-moe-lora", learning_rate=3e-3)
    good = export_gguf(info.name, tmp_path / "good.gguf", "f32", adapter_only=True)
    assert good.verification["passed"], failed_checks(good.verification)
    monkeypatch.setattr(gemma4, "expert_scales", lambda refs: lambda module: np.ones(1, np.float32))
    bad = export_gguf(info.name, tmp_path / "bad.gguf", "f32", adapter_only=True)
    assert not bad.verification["passed"]


def test_multimodal_checkpoint_exports_its_text_model(tiny_model, tmp_path):
    """Google's Gemma 4 checkpoints are multimodal (model.language_model.* beside the towers):
    the GGUF is the text model, the towers are not written (llama.cpp keeps them in a separate
    projector file), and it answers as mlx-lm's model."""
    result = export_gguf(tiny_model("gemma4_mm"), tmp_path / "mm.gguf", "f32")
    assert result.verification["passed"], failed_checks(result.verification)
    names = {t.name for t in gguf.GGUFReader(str(result.path)).tensors}
    assert "per_layer_token_embd.weight" in names and "blk.5.attn_q.weight" in names
    assert not [n for n in names if "vision" in n or "embed_vision" in n]


def test_without_the_proportional_rope_table_the_file_answers_differently(tiny_model, tmp_path,
                                                                          monkeypatch):
    """The full layers rotate a quarter of each head; written without the 1e30 factors that
    stop llama.cpp rotating the rest, the file loads and answers differently: the built-in
    verification catches it."""
    import engine.export.gemma4 as gemma4

    monkeypatch.setattr(gemma4, "rope_freqs", lambda a: np.ones(
        gemma4.global_head_dim(gemma4.gemma4_args(a.config)) // 2, dtype=np.float32))
    result = export_gguf(tiny_model("gemma4"), tmp_path / "wrong.gguf", "f32")
    assert not result.verification["passed"]


def test_shared_layers_own_kv_projections_are_not_written(tiny_model, tmp_path):
    """Checkpoints may still hold K/V projections for the shared-KV layers; mlx-lm drops them
    (those layers read another layer's cache), and so does the export."""
    from safetensors.numpy import load_file, save_file

    folder = edited_copy(tiny_model("gemma4"), tmp_path / "with-kv", config={})
    weights = load_file(str(folder / "model.safetensors"))
    rng = np.random.default_rng(1)
    for layer in (3, 4, 5):
        for proj, rows in (("k_proj", 16), ("v_proj", 16)):
            weights[f"model.layers.{layer}.self_attn.{proj}.weight"] = \
                rng.normal(0, 0.1, (rows, 64)).astype(np.float32)
        weights[f"model.layers.{layer}.self_attn.k_norm.weight"] = np.ones(16, np.float32)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "g4.gguf"
    result = export_gguf(folder, out, "f32")
    assert result.verification["passed"], failed_checks(result.verification)
    names = {t.name for t in gguf.GGUFReader(str(out)).tensors}
    assert not {f"blk.{i}.attn_{p}.weight" for i in (3, 4, 5) for p in "kv"} & names


@pytest.mark.parametrize("method", ["dora", "qlora"])
def test_dora_and_qlora_trained_fused_and_verified(method, tiny_model, tmp_path):
    """DoRA fuses (a GGUF LoRA cannot carry it: refused with the reason); QLoRA on the 4-bit
    base fuses and its adapter alone is applied by llama.cpp to the dequantized base."""
    from .chain import trained

    settings = {"method": "dora"} if method == "dora" else {"quantize_base": 4}
    info = trained(tiny_model("gemma4"), tmp_path, f"g4-{method}", learning_rate=3e-3,
                   **settings)
    fused = export_gguf(info.name, tmp_path / f"{method}.gguf", "f32")
    assert fused.verification["passed"], failed_checks(fused.verification)
    if method == "dora":
        with pytest.raises(TailorError, match="DoRA"):
            export_gguf(info.name, tmp_path / "dora-lora.gguf", "f32", adapter_only=True)
    else:
        lora = export_gguf(info.name, tmp_path / "qlora-lora.gguf", "f32", adapter_only=True)
        assert lora.verification["passed"], failed_checks(lora.verification)


def test_the_check_runs_gelu_as_llama_cpps_cpu_table(tiny_model, tmp_path, monkeypatch):
    """A stronger adapter (rate 1e-2) moves the fixture's logits so far that llama.cpp's float16
    GELU table alone puts them 5e-3 of their range from exact MLX: with MLX running the same
    table the correct file passes (6e-4), and it says so; with exact GELU it would fail."""
    import engine.export.gelu_table as gelu_table
    from .chain import trained

    info = trained(tiny_model("gemma4"), tmp_path, "g4-strong", learning_rate=1e-2)
    result = export_gguf(info.name, tmp_path / "strong.gguf", "f32")
    assert result.verification["passed"], failed_checks(result.verification)
    check = next(c for c in result.verification["checks"]
                 if c["name"] == "llama.cpp next token = MLX")
    assert gelu_table.NOTE in check["detail"]
    monkeypatch.setattr(gelu_table, "TABLE_GELU_MODEL_TYPES", ())
    exact = export_gguf(info.name, tmp_path / "strong-exact.gguf", "f32")
    assert not exact.verification["passed"]


def test_table_gelu_is_ggmls():
    """float16 in, float16(gelu(x)) out, |x| >= 10 unrounded (ggml-cpu vec.h GGML_GELU_FP16)."""
    import mlx.core as mx

    from engine.export.gelu_table import table_gelu

    x = np.concatenate([np.linspace(-12, 12, 4001), [0.1234567, -3.3333333, 10.0, -10.0]]
                       ).astype(np.float32)
    xh = x.astype(np.float16).astype(np.float32)
    c, a, one, half = (np.float32(v) for v in (np.sqrt(2 / np.pi), 0.044715, 1.0, 0.5))
    gelu = half * xh * (one + np.tanh(c * xh * (one + a * xh * xh)))  # float32, as ggml's C
    want = np.where(x >= 10, x, np.where(x <= -10, 0.0,
                                         gelu.astype(np.float16).astype(np.float32)))
    got = np.array(table_gelu(mx.array(x)))
    assert np.array_equal(got, want.astype(np.float32))
