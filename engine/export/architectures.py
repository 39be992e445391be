"""Hugging Face architectures -> llama.cpp (GGUF) architectures: hyper-parameter metadata and the
per-tensor changes llama.cpp expects (after llama.cpp's `convert_hf_to_gguf.py`; names from
gguf-py's tensor map, so only tensors llama.cpp knows are written).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..capabilities import UNSUPPORTED, GGUF_MODEL_TYPES, gguf_architecture, gguf_support
from ..events import TailorError
from .experts import stacked_gguf_name
from .row_transforms import AddOne, PermuteRows

GEMMAS = ("gemma", "gemma2", "gemma3")
# llama.cpp runs these with its "normal" (interleaved) rotary layout, so HF's rotate-half Q/K
# rows are permuted as convert_hf_to_gguf's LlamaModel does (llama-model.cpp llama_rope_type).
PERMUTED_QK = ("llama", "smollm3", "granite", "granitemoe", "granitehybrid", "mistral3")
# Tensors in HF checkpoints that llama.cpp computes itself.
SKIP_RE = re.compile(r"(rotary_emb\.inv_freq|\.attention\.masked_bias|\.attn\.bias)$")


@dataclass
class ArchInfo:
    model_type: str
    arch: str  # GGUF architecture
    config: dict

    @property
    def n_layers(self) -> int:
        return int(self.config["num_hidden_layers"])

    @property
    def n_head(self) -> int:
        return int(self.config["num_attention_heads"])

    @property
    def n_kv_head(self) -> int:
        return int(self.config.get("num_key_value_heads") or self.n_head)

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.n_head)

    @property
    def rope_dims(self) -> int:
        """Rotated dimensions per head (Phi-4-mini rotates 3/4 of each head)."""
        factor = self.config.get("partial_rotary_factor") or rope_params(self.config).get(
            "partial_rotary_factor")
        return int(self.head_dim * float(factor or 1.0))

    @property
    def n_expert(self) -> int:
        """Experts per MoE layer (1: dense)."""
        c = self.config
        return int(c.get("num_experts") or c.get("num_local_experts") or 1)

    @property
    def tied(self) -> bool:
        default = self.arch in GEMMAS + ("gemma4",)  # Gemma ties by default; others do not
        return bool(self.config.get("tie_word_embeddings", default))


def arch_info(config: dict, source: str = "") -> ArchInfo:
    """The architecture of a model config, or TailorError naming an unsupported one."""
    model_type = config.get("model_type", "")
    if model_type == "gemma3" and "text_config" in config:
        raise TailorError(f"{source}: {gguf_support(config)[1]}",
                          hint="use a text-only Gemma 3 checkpoint (1B, or a text extraction)")
    arch = gguf_architecture(model_type)
    if model_type == "gemma4":  # the multimodal checkpoint: its text model is exported
        from .gemma4 import text_config

        config = text_config(config)
    if arch is None and model_type in UNSUPPORTED:
        raise TailorError(f"{source}: {gguf_support(config)[1]}",
                          hint="fuse and use the MLX model, or export another family")
    if arch is None:
        archs = ", ".join(config.get("architectures") or []) or "unknown"
        raise TailorError(
            f"{source}: architecture {model_type or '?'!r} ({archs}) is not supported for GGUF "
            f"export; supported: {', '.join(sorted(GGUF_MODEL_TYPES))}",
            hint="export a model of a supported family, or use llama.cpp's own converter")
    if config.get("quantization_config") and not is_mlx_quantized(config):
        method = (config["quantization_config"] or {}).get("quant_method", "?")
        raise TailorError(f"{source} holds {method}-quantized weights, which Tailor cannot "
                          "dequantize", hint="export the original full-precision model")
    _check_family_limits(arch, config, source)
    return ArchInfo(model_type, arch, config)


def _check_family_limits(arch: str, config: dict, source: str) -> None:
    """Refuse configs llama.cpp would load and then run differently from the model."""
    if arch == "smollm3" and config.get("no_rope_layers") is not None:
        # llama.cpp hard-codes NoPE on every 4th layer (smollm3.cpp n_no_rope_layer_step = 4)
        layers = list(config["no_rope_layers"])
        if layers != [int((i + 1) % 4 != 0) for i in range(len(layers))]:
            raise TailorError(f"{source}: this SmolLM3 skips rotary embeddings on other layers "
                              "than every 4th (no_rope_layers); llama.cpp runs NoPE on every "
                              "4th layer only, so the GGUF would answer differently",
                              hint="only SmolLM3 models with the standard NoPE layout export")
    if arch in ("qwen3moe", "qwen3next"):
        _check_qwen3_moe(config, source)
    if arch == "gemma4":
        from .gemma4 import check_gemma4

        check_gemma4(config, source)
    if arch == "olmo2" and config.get("tie_word_embeddings"):
        raise TailorError(f"{source}: this OLMo 2 ties its output to the embeddings; "
                          "llama.cpp's OLMo 2 needs a separate output tensor",
                          hint="export an OLMo 2 checkpoint with its own lm_head")


def _check_qwen3_moe(config: dict, source: str) -> None:
    # llama.cpp's qwen3moe: every layer sparse, top-k weights renormalised (qwen3moe.cpp)
    if config.get("mlp_only_layers") or int(config.get("decoder_sparse_step") or 1) != 1:
        raise TailorError(f"{source}: this Qwen3-MoE has dense layers among its expert layers "
                          "(mlp_only_layers / decoder_sparse_step); llama.cpp's qwen3moe runs "
                          "experts in every layer", hint="only all-sparse Qwen3-MoE models export")
    if config.get("norm_topk_prob") is False:
        raise TailorError(f"{source}: this Qwen3-MoE does not renormalise its top-k expert "
                          "weights (norm_topk_prob false); llama.cpp's qwen3moe always does",
                          hint="only Qwen3-MoE models with norm_topk_prob export")


def is_mlx_quantized(config: dict) -> bool:
    """A folder mlx-lm loads quantized (e.g. mlx-community 4-bit, or gpt-oss's MXFP4 experts,
    which mlx-lm reads as MLX's mxfp4 mode): dequantized by MLX before export."""
    method = (config.get("quantization_config") or {}).get("quant_method")
    return bool(config.get("quantization")) or (config.get("model_type") == "gpt_oss"
                                                and method == "mxfp4")


def add_hparams(writer, a: ArchInfo, n_vocab: int) -> None:
    """Hyper-parameter metadata for architecture ``a``."""
    c = a.config
    w = writer
    w.add_block_count(a.n_layers)
    ctx = c.get("max_position_embeddings") or 4096
    w.add_context_length(int(ctx))
    w.add_embedding_length(int(c["hidden_size"]))
    if a.arch == "gemma4":  # sizes, heads and rope per layer type (engine/export/gemma4.py)
        from .gemma4 import add_gemma4_hparams

        w.add_head_count(a.n_head)
        w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
        w.add_vocab_size(int(n_vocab))
        return add_gemma4_hparams(w, a)
    w.add_feed_forward_length(int(c["intermediate_size"]))
    w.add_head_count(a.n_head)
    if a.arch != "granitehybrid":  # (per layer there: 0 on its Mamba-2 layers)
        w.add_head_count_kv(a.n_kv_head)
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    w.add_rope_freq_base(rope_theta(c))
    w.add_vocab_size(int(n_vocab))
    if a.head_dim * a.n_head != int(c["hidden_size"]) \
            or a.arch in ("qwen3", "qwen3moe", "qwen35", "qwen35moe", "qwen3next") + GEMMAS:
        w.add_key_length(a.head_dim)
        w.add_value_length(a.head_dim)
    if a.arch in ("qwen2", "qwen3", "qwen3moe", "phi3", "olmo2", "gpt-oss", "qwen35", "qwen35moe",
                  "qwen3next") + tuple(x for x in PERMUTED_QK if x != "granitehybrid"):
        w.add_rope_dimension_count(a.rope_dims)
    if a.arch in ("granite", "granitemoe", "granitehybrid"):
        _add_granite_scales(w, c)
    if a.arch == "granitehybrid":
        _add_granite_hybrid(w, a)
    if a.arch == "gpt-oss":
        _add_gpt_oss(w, a)
    if a.arch in ("qwen35", "qwen35moe", "qwen3next"):
        _add_qwen35(w, a)
    if a.n_expert > 1:
        w.add_expert_count(a.n_expert)
        w.add_expert_used_count(int(c.get("num_experts_per_tok") or 2))
        if c.get("moe_intermediate_size"):
            w.add_expert_feed_forward_length(int(c["moe_intermediate_size"]))
    _add_rope_scaling(w, a)
    if a.arch == "gemma2":
        if c.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(float(c["attn_logit_softcapping"]))
        if c.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
        w.add_sliding_window(int(c.get("sliding_window") or 4096))
    if a.arch == "gemma3":
        w.add_sliding_window(int(c.get("sliding_window") or 512))
        w.add_rope_freq_base_swa(float(c.get("rope_local_base_freq", 10000.0)))
        # llama.cpp reads a per-layer list: True = sliding-window (local) layer. Newer configs
        # list the layer types; older ones give the period (mlx-lm's default: 6).
        types = c.get("layer_types")
        if isinstance(types, list) and len(types) == a.n_layers:
            local = [t == "sliding_attention" for t in types]
        else:
            pattern = int(c.get("sliding_window_pattern") or 6)
            local = [bool((i + 1) % pattern) for i in range(a.n_layers)]
        w.add_sliding_window_pattern(local)
    if a.arch == "phi3":
        orig = c.get("original_max_position_embeddings") or ctx
        w.add_rope_scaling_orig_ctx_len(int(orig))
        if c.get("sliding_window"):
            w.add_sliding_window(int(c["sliding_window"]))
        if longrope(a):
            w.add_rope_scaling_attn_factors(longrope_attn_factor(a))


def rope_params(c: dict) -> dict:
    """The rope settings: ``rope_scaling`` (older configs) or ``rope_parameters`` (newer ones,
    Ministral 3: rope_theta inside)."""
    return c.get("rope_scaling") or c.get("rope_parameters") or {}


def rope_theta(c: dict) -> float:
    return float(c.get("rope_theta") or rope_params(c).get("rope_theta") or 10000.0)


def _add_rope_scaling(w, a: ArchInfo) -> None:
    import gguf

    rs = rope_params(a.config)
    rtype = rs.get("rope_type") or rs.get("type")
    if rtype == "linear" and rs.get("factor"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rs["factor"]))
    elif rtype == "yarn" and rs.get("factor"):
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rs["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rs["original_max_position_embeddings"]))
        if rs.get("beta_fast") is not None:
            w.add_rope_scaling_yarn_beta_fast(float(rs["beta_fast"]))
        if rs.get("beta_slow") is not None:
            w.add_rope_scaling_yarn_beta_slow(float(rs["beta_slow"]))
        if a.arch == "mistral3":
            _add_ministral3_yarn(w, a, rs)
    elif rtype not in (None, "default", "llama3") and not longrope(a):
        raise TailorError(f"rope scaling {rtype!r} of this {a.model_type} model is not supported "
                          "for GGUF export")


def _add_ministral3_yarn(w, a: ArchInfo, rs: dict) -> None:
    """Ministral 3: YaRN's mscale_all_dim as llama.cpp's log multiplier (which assumes mscale
    1), and Llama 4's attention temperature (beta; llama.cpp floors by the original context)."""
    if float(rs.get("mscale", 1.0) or 1.0) != 1.0:
        raise TailorError(f"this Ministral 3 uses YaRN mscale {rs['mscale']}; llama.cpp assumes "
                          "1, so the GGUF would answer differently",
                          hint="only Ministral 3 models with mscale 1 export")
    w.add_rope_scaling_yarn_log_mul(float(rs.get("mscale_all_dim") or 0.0))
    if rs.get("llama_4_scaling_beta"):
        w.add_attn_temperature_scale(float(rs["llama_4_scaling_beta"]))


def _add_qwen35(w, a: ArchInfo) -> None:
    """Qwen3.5's linear-attention sizes, which layers are full attention, the rope sections
    (text positions: every section the same position, i.e. plain rotary)."""
    c = a.config
    if int(c["linear_key_head_dim"]) != int(c["linear_value_head_dim"]):
        raise TailorError("this Qwen3.5's linear-attention key and value heads differ in size; "
                          "llama.cpp's qwen35 assumes one head size for both")
    w.add_ssm_conv_kernel(int(c["linear_conv_kernel_dim"]))
    w.add_ssm_state_size(int(c["linear_key_head_dim"]))
    w.add_ssm_group_count(int(c["linear_num_key_heads"]))
    w.add_ssm_time_step_rank(int(c["linear_num_value_heads"]))
    w.add_ssm_inner_size(int(c["linear_value_head_dim"]) * int(c["linear_num_value_heads"]))
    w.add_full_attention_interval(int(c.get("full_attention_interval") or 4))
    if a.arch != "qwen3next":  # (Qwen3-Next: plain partial rotary, no sections)
        sections = list(rope_params(c).get("mrope_section") or [11, 11, 10])
        w.add_rope_dimension_sections((sections + [0, 0, 0, 0])[:4])
    if c.get("shared_expert_intermediate_size"):
        w.add_expert_shared_feed_forward_length(int(c["shared_expert_intermediate_size"]))


def _add_granite_hybrid(w, a: ArchInfo) -> None:
    """Granite 4 hybrid: the Mamba-2 sizes, KV heads only on attention layers, and rope off
    unless the config asks for it (Granite 4 H uses no position embedding: llama.cpp reads
    rope.scaling.finetuned as that switch)."""
    c = a.config
    types = list(c.get("layer_types") or [])
    w.add_ssm_conv_kernel(int(c["mamba_d_conv"]))
    w.add_ssm_state_size(int(c["mamba_d_state"]))
    w.add_ssm_group_count(int(c.get("mamba_n_groups") or 1))
    w.add_ssm_inner_size(int(c["mamba_n_heads"]) * int(c["mamba_d_head"]))
    w.add_ssm_time_step_rank(int(c["mamba_n_heads"]))
    w.add_head_count_kv([a.n_kv_head if t == "attention" else 0 for t in types])
    w.add_rope_scaling_finetuned(c.get("position_embedding_type", "rope") == "rope")
    if a.n_expert > 1 and c.get("shared_intermediate_size"):
        w.add_expert_shared_feed_forward_length(int(c["shared_intermediate_size"]))


def _add_gpt_oss(w, a: ArchInfo) -> None:
    """gpt-oss: every expert as wide as intermediate_size, the sliding window and which layers
    use it (llama.cpp's default period 2 is written out from layer_types)."""
    c = a.config
    w.add_expert_feed_forward_length(int(c["intermediate_size"]))
    w.add_sliding_window(int(c.get("sliding_window") or 128))
    types = c.get("layer_types")
    if isinstance(types, list) and len(types) == a.n_layers:
        w.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    if float(c.get("swiglu_limit", 7.0)) != 7.0:
        raise TailorError(f"this gpt-oss clamps its SwiGLU at {c['swiglu_limit']}; llama.cpp's "
                          "gpt-oss clamps at 7.0, so the GGUF would answer differently")


def _add_granite_scales(w, c: dict) -> None:
    """Granite's mu-P multipliers (llama.cpp reads the logit scale as a divisor, as HF does)."""
    w.add_logit_scale(float(c.get("logits_scaling") or 1.0))
    if c.get("attention_multiplier"):
        w.add_attention_scale(float(c["attention_multiplier"]))
    if c.get("embedding_multiplier"):
        w.add_embedding_scale(float(c["embedding_multiplier"]))
    if c.get("residual_multiplier"):
        w.add_residual_scale(float(c["residual_multiplier"]))


def longrope(a: ArchInfo) -> bool:
    """Phi-3 / Phi-4-mini long-context rope (per-dimension frequency factors)."""
    rs = a.config.get("rope_scaling") or {}
    return a.arch == "phi3" and (rs.get("rope_type") or rs.get("type")) in ("longrope", "su")


def longrope_attn_factor(a: ArchInfo) -> float:
    """The attention scale longrope applies to the rotated dimensions (as mlx-lm and HF)."""
    c = a.config
    scale = float(c.get("max_position_embeddings") or 4096) / float(
        c.get("original_max_position_embeddings") or 4096)
    orig = float(c.get("original_max_position_embeddings") or 4096)
    return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0


def generated_tensors(a: ArchInfo) -> list[tuple[str, np.ndarray]]:
    """Tensors llama.cpp needs that the checkpoint does not hold: Llama 3.1+'s rope_freqs;
    longrope's factor tables. mlx-lm applies the long factors at every length
    (rope_utils.SuScaledRoPE), so the model was trained with them: both tables carry them, and
    llama.cpp answers as the trained model at any context size."""
    factors = llama3_rope_factors(a)
    if factors is not None:
        return [("rope_freqs.weight", factors)]
    if a.arch == "gemma4":  # the full layers' proportional rope
        from .gemma4 import rope_freqs

        return [("rope_freqs.weight", rope_freqs(a))]
    if longrope(a):
        long = np.asarray(a.config["rope_scaling"]["long_factor"], dtype=np.float32)
        if long.shape != (a.rope_dims // 2,):
            raise TailorError(f"rope_scaling.long_factor has {long.size} values; this Phi-3 "
                              f"model rotates {a.rope_dims} dimensions, so it needs "
                              f"{a.rope_dims // 2}", hint="the config.json is inconsistent")
        return [("rope_factors_long.weight", long), ("rope_factors_short.weight", long.copy())]
    return []


def llama3_rope_factors(a: ArchInfo) -> np.ndarray | None:
    """Llama 3.1+ frequency factors (llama.cpp's `rope_freqs.weight`), or None."""
    rs = a.config.get("rope_scaling") or {}
    if a.arch != "llama" or (rs.get("rope_type") or rs.get("type")) != "llama3":
        return None
    base = rope_theta(a.config)
    dim = a.head_dim
    factor = float(rs.get("factor", 8.0))
    low, high = float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim)):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def row_transform(a: ArchInfo, hf_name: str):
    """What the tensor needs to be as llama.cpp wants it: a callable (float32 in, float32
    out; 2-D float16 rows are only moved, so they may come in and go out as float16), or
    None for nothing (picklable: encoding worker processes apply it)."""
    if a.arch in PERMUTED_QK:
        if hf_name.endswith("q_proj.weight"):
            return PermuteRows(a.n_head)
        if hf_name.endswith("k_proj.weight"):
            return PermuteRows(a.n_kv_head)
    if a.arch in GEMMAS and hf_name.endswith("norm.weight"):
        return AddOne()
    return None


def row_local(a: ArchInfo, hf_name: str) -> bool:
    """True when `transform` works row by row (so a tensor may be converted in row chunks)."""
    if a.arch in ("qwen35", "qwen35moe", "qwen3next") and "linear_attn." in hf_name:
        return False  # value heads reordered across rows (engine/export/qwen35.py)
    return not (a.arch in PERMUTED_QK and re.search(r"[qk]_proj\.weight$", hf_name))


def gguf_name(a: ArchInfo, name_map, hf_name: str) -> str | None:
    """The GGUF tensor name, None for a tensor to drop; TailorError for one llama.cpp lacks."""
    if SKIP_RE.search(hf_name):
        return None
    if a.model_type == "gemma4":  # multimodal Gemma 4: the text model's names, no towers
        from .gemma4 import text_name

        hf_name = text_name(hf_name)
        if hf_name is None:
            return None
    if a.arch == "gemma4":
        from .gemma4 import gemma4_gguf_name

        special = gemma4_gguf_name(name_map, hf_name)  # the MoE scales and expert tensors
        if special is not None:
            return special
    if hf_name.startswith("lm_head.") and a.tied and a.arch != "gemma3":
        # Tied: llama.cpp reuses token_embd. mlx-lm's Gemma 3 uses lm_head whenever the
        # checkpoint has one (whatever the config says), so the export follows the training.
        return None
    name = stacked_gguf_name(hf_name) or name_map.get_name(hf_name,
                                                           try_suffixes=(".weight", ".bias"))
    if name is not None and hf_name.endswith((".sinks", ".layer_scalar")):
        name += ".weight"  # gpt-oss's sinks, Gemma 4's layer scalar: bare parameters
    if name is None:
        raise TailorError(f"tensor {hf_name!r} of this {a.model_type} model has no llama.cpp "
                          "counterpart; the export would not load",
                          hint="this checkpoint has parts llama.cpp's architecture does not know")
    return name
