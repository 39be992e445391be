"""Gemma 4 (text) as llama.cpp's gemma4 architecture wants it (after llama.cpp's
``conversion/gemma.py`` Gemma4Model and ``src/models/gemma4.cpp``): per-layer head sizes and
KV head counts, sliding / full layers with their own rope, the proportional rope of the full
layers as a frequency-factor table, shared-KV layers, per-layer embeddings, the double-wide MLP
of the shared layers, and the gemma4 tokenizer (SentencePiece-style BPE from tokenizer.json).

The settings are read as mlx-lm reads them (its ModelArgs defaults fill what config.json leaves
out), because the GGUF must answer as the model was trained.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..events import TailorError
from .safetensors_stream import RowsFromShape

if TYPE_CHECKING:  # pragma: no cover
    from .architectures import ArchInfo

HINT = "only Gemma 4 models llama.cpp runs the same way export; fuse and use the MLX model"
# The tokens llama.cpp's converter keeps visible in the output (user-defined, not control), so
# the chat parser reads the thought channel and tool calls.
VISIBLE_TOKENS = ("<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
                  "<tool_response|>", '<|"|>')
_LAYER = re.compile(r"\.layers\.(\d+)\.")


# The multimodal checkpoint's towers: llama.cpp puts them in a separate projector file
# (mmproj), which Tailor does not write; mlx-lm's gemma4 drops them too and trains the text.
_TOWERS = ("vision_tower.", "audio_tower.", "embed_vision.", "embed_audio.",
           "multi_modal_projector.", "vision_embedder.")


def text_config(config: dict) -> dict:
    """The text model's settings of a multimodal Gemma 4 config, as mlx-lm's gemma4 builds
    them (the top-level vocabulary size; 8 heads and 1 KV head where the text config is
    silent)."""
    text = dict(config.get("text_config") or {})
    text["vocab_size"] = config.get("vocab_size", 262144)
    text.setdefault("num_attention_heads", 8)
    text.setdefault("num_key_value_heads", 1)
    text["model_type"] = "gemma4_text"
    return text


def text_name(name: str) -> str | None:
    """A multimodal Gemma 4 tensor's name in the text model (Hugging Face's
    model.language_model.*, mlx-lm's language_model.model.*), None for the towers."""
    for prefix in ("model.language_model.", "language_model.model."):
        if name.startswith(prefix):
            return "model." + name[len(prefix):]
    if name.startswith("language_model.lm_head."):
        return name[len("language_model."):]
    if name.removeprefix("model.").startswith(_TOWERS):
        return None
    return name


def gemma4_args(config: dict):
    """mlx-lm's resolved Gemma 4 text settings (its defaults where config.json is silent)."""
    from mlx_lm.models.gemma4_text import ModelArgs

    return ModelArgs.from_dict(config)


def check_gemma4(config: dict, source: str) -> None:
    """Refuse the Gemma 4 configs llama.cpp would run differently from mlx-lm."""
    g = gemma4_args(config)
    if config.get("use_bidirectional_attention"):
        raise TailorError(f"{source}: this Gemma 4 uses bidirectional attention "
                          f"({config['use_bidirectional_attention']!r}); mlx-lm trains it causal",
                          hint=HINT)
    full = g.rope_parameters.get("full_attention", {})
    sliding = g.rope_parameters.get("sliding_attention", {})
    if full.get("rope_type", "default") not in ("default", "proportional") \
            or float(full.get("factor", 1.0)) != 1.0 \
            or (sliding.get("rope_type") or "default") != "default":
        raise TailorError(f"{source}: this Gemma 4's rope settings ({g.rope_parameters}) are not "
                          "the proportional / default pair llama.cpp's gemma4 implements",
                          hint=HINT)
    if g.hidden_size_per_layer_input and g.vocab_size_per_layer_input != g.vocab_size:
        raise TailorError(f"{source}: this Gemma 4's per-layer embeddings cover "
                          f"{g.vocab_size_per_layer_input} tokens, its vocabulary {g.vocab_size}; "
                          "llama.cpp's gemma4 reads one per-layer row per token", hint=HINT)
    _check_shared_kv(g, source)


def _check_shared_kv(g, source: str) -> None:
    """mlx-lm (as HF) gives a shared layer the KV of the last full-KV layer of its type;
    llama.cpp takes the second-to-last full-KV layer for sliding layers and the last one for
    full layers. They agree only when those two layers are sliding, then full."""
    first_shared = g.num_hidden_layers - g.num_kv_shared_layers
    if g.num_kv_shared_layers <= 0 or first_shared <= 0:
        return  # (no shared layers; or none with KV, which mlx-lm cannot build either)
    types = g.layer_types
    if first_shared < 2 or types[first_shared - 2] != "sliding_attention" \
            or types[first_shared - 1] != "full_attention":
        raise TailorError(f"{source}: this Gemma 4's last layers before the shared-KV ones "
                          f"({types[max(0, first_shared - 2):first_shared]}) are not one sliding "
                          "then one full layer; llama.cpp's gemma4 would read other layers' "
                          "keys and values", hint=HINT)


def global_head_dim(g) -> int:
    return int(g.global_head_dim or g.head_dim)


def kv_heads(g) -> list[int]:
    """KV heads per layer, as mlx-lm builds them (full layers with K = V may have their own)."""
    out = []
    for t in g.layer_types:
        own = g.attention_k_eq_v and t == "full_attention" \
            and g.num_global_key_value_heads is not None
        out.append(int(g.num_global_key_value_heads if own else g.num_key_value_heads))
    return out


def add_gemma4_hparams(w, a: "ArchInfo") -> None:
    g = gemma4_args(a.config)
    n = g.num_hidden_layers
    first_shared = n - g.num_kv_shared_layers
    swa = [t == "sliding_attention" for t in g.layer_types]
    if g.use_double_wide_mlp and g.num_kv_shared_layers > 0:
        w.add_feed_forward_length([g.intermediate_size * (2 if i >= first_shared else 1)
                                   for i in range(n)])
    else:
        w.add_feed_forward_length(int(g.intermediate_size))
    heads = kv_heads(g)
    w.add_head_count_kv(heads if len(set(heads)) > 1 else heads[0])
    rp = g.rope_parameters
    w.add_rope_freq_base(float(rp.get("full_attention", {}).get("rope_theta", 1000000.0)))
    w.add_rope_freq_base_swa(float(rp.get("sliding_attention", {}).get("rope_theta", 10000.0)))
    full_dim = global_head_dim(g)
    w.add_key_length(full_dim)
    w.add_value_length(full_dim)
    w.add_key_length_swa(int(g.head_dim))
    w.add_value_length_swa(int(g.head_dim))
    # Full layers rotate their whole head with frequency factors (rope_freqs); mlx-lm's default
    # rope on the sliding layers rotates all of each head.
    w.add_rope_dimension_count(full_dim)
    w.add_rope_dimension_count_swa(int(g.head_dim))
    if g.final_logit_softcapping:
        w.add_final_logit_softcapping(float(g.final_logit_softcapping))
    w.add_sliding_window(int(g.sliding_window))
    w.add_sliding_window_pattern(swa)
    w.add_shared_kv_layers(int(g.num_kv_shared_layers))
    w.add_embedding_length_per_layer_input(int(g.hidden_size_per_layer_input or 0))
    if g.enable_moe_block:  # 26B-A4B style: a dense MLP beside the experts in every layer
        w.add_expert_count(int(g.num_experts))
        w.add_expert_used_count(int(g.top_k_experts))
        w.add_expert_feed_forward_length(int(g.moe_intermediate_size))


def rope_freqs(a: "ArchInfo") -> np.ndarray:
    """The full layers' proportional rope as llama.cpp computes it: the whole head rotated
    with exponent 2i / head_dim, factor 1 on the rotated pairs and 1e30 (no rotation) on the
    rest, which is mlx-lm's ProportionalRoPE (inf frequencies past the rotated pairs)."""
    g = gemma4_args(a.config)
    full = g.rope_parameters.get("full_attention", {})
    dim = global_head_dim(g)
    factor = float(full.get("partial_rotary_factor", 1.0)) \
        if full.get("rope_type") == "proportional" else 1.0
    rotated = int(dim * factor) // 2
    return np.asarray([1.0] * rotated + [1e30] * (dim // 2 - rotated), dtype=np.float32)


@dataclass
class GateUpRef(RowsFromShape):
    """mlx-lm's separate expert gate and up projections [experts, ff, in] as Hugging Face's
    (and llama.cpp's) one gate_up tensor [experts, 2 ff, in], gate first."""

    name: str
    gate: object
    up: object

    @property
    def shape(self) -> tuple[int, ...]:
        e, ff, cols = self.gate.shape
        return (e, 2 * ff, cols)

    def read(self, row0: int = 0, row1: int | None = None, *,
             keep_f16: bool = False) -> np.ndarray:
        return np.concatenate([self.gate.read(row0, row1, keep_f16=keep_f16),
                               self.up.read(row0, row1, keep_f16=keep_f16)], axis=1)


def gemma4_refs(config: dict, refs: list) -> list:
    """The checkpoint tensors llama.cpp reads: shared-KV layers' own K/V projections dropped
    (mlx-lm's sanitize drops them too: those layers read another layer's cache); a fused
    folder's experts (mlx-lm's switch_glu) in the checkpoint's gate_up / down layout."""
    from dataclasses import replace

    g = gemma4_args(config)
    first_shared = g.num_hidden_layers - g.num_kv_shared_layers
    by_name = {r.name: r for r in refs}
    out = []
    for ref in refs:
        m = _LAYER.search(ref.name)
        if m and int(m.group(1)) >= first_shared and re.search(
                r"\.self_attn\.(k_proj|v_proj|k_norm)\.", ref.name):
            continue
        if ref.name.endswith("experts.switch_glu.gate_proj.weight"):
            prefix = ref.name[:-len("switch_glu.gate_proj.weight")]
            out.append(GateUpRef(prefix + "gate_up_proj", ref,
                                 by_name[prefix + "switch_glu.up_proj.weight"]))
        elif ref.name.endswith("experts.switch_glu.down_proj.weight"):
            out.append(replace(ref, name=ref.name[:-len("switch_glu.down_proj.weight")]
                               + "down_proj"))
        elif not ref.name.endswith("experts.switch_glu.up_proj.weight"):
            out.append(ref)
    return out


def gemma4_gguf_name(name_map, hf_name: str) -> str | None:
    """llama.cpp's names for the MoE tensors the tensor map does not know as such: the
    router's input scale, the per-expert output scale, the bare expert parameters."""
    m = _LAYER.search(hf_name)
    if m and hf_name.endswith(".router.scale"):
        return f"blk.{m.group(1)}.ffn_gate_inp.scale"
    if m and hf_name.endswith(".router.per_expert_scale"):
        return f"blk.{m.group(1)}.ffn_down_exps.scale"
    if hf_name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
        name = name_map.get_name(hf_name)
        return name + ".weight" if name else None
    return None


def gemma4_expert_lora(module: str, la: np.ndarray, lb: np.ndarray, read_pair, expert_scale):
    """A LoRA on the experts' gate and up projections as one LoRA on llama.cpp's gate_up
    tensor: A stacked [A_gate; A_up], B block-diagonal, doubled (llama.cpp scales a tensor's
    LoRA by alpha / its rank, and the rank doubles). -> [(module, la, lb)], or [] for the up
    half (written with its gate). ``read_pair(module)``: that module's (lora_a, lora_b);
    ``expert_scale(module)``: the layer's per-expert output scale, which llama.cpp applies to
    the base experts' output only (before adding the LoRA), mlx-lm to all of it: folded into
    the down projection's B."""
    if module.endswith("switch_glu.up_proj"):
        return []
    if not module.endswith("switch_glu.gate_proj"):
        if module.endswith("switch_glu.down_proj"):
            lb = (lb * expert_scale(module).reshape(-1, 1, 1)).astype(lb.dtype)
            module = module[:-len("switch_glu.down_proj")] + "down_proj"
        return [(module, la, lb)]
    up_a, up_b = read_pair(module[:-len("gate_proj")] + "up_proj")
    e, ff, r = lb.shape
    b = np.zeros((e, 2 * ff, 2 * r), dtype=lb.dtype)
    b[:, :ff, :r], b[:, ff:, r:] = 2 * lb, 2 * up_b
    return [(module[:-len("switch_glu.gate_proj")] + "gate_up_proj",
             np.concatenate([la, up_a], axis=1), b)]


def is_gemma4_tokenizer(tok_json: dict | None) -> bool:
    """Gemma 4's tokenizer.json: BPE with <0xXX> byte fallback, spaces normalised to U+2581."""
    import json

    if not tok_json or (tok_json.get("model") or {}).get("type") != "BPE":
        return False
    normalizer = json.dumps(tok_json.get("normalizer") or {}, ensure_ascii=False)
    return bool(tok_json["model"].get("byte_fallback")) and "\u2581" in normalizer


def gemma4_vocab(tok_json: dict, tok_cfg: dict, n_rows: int):
    """llama.cpp's "gemma4" tokenizer: the BPE vocabulary and merges as tokenizer.json holds
    them (U+2581 spaces, raw UTF-8, <0xXX> byte tokens), special tokens as control tokens but
    the visible ones, no space prefix, BOS added."""
    from .vocab import BYTE, CONTROL, NORMAL, UNUSED, USER_DEFINED, VocabInfo, _added_tokens, \
        _pad_to

    vocab = dict(tok_json["model"]["vocab"])
    added = _added_tokens(tok_json, tok_cfg)
    for i, (text, _special) in added.items():
        vocab[text] = i
    by_id = {i: t for t, i in vocab.items()}
    tokens, types, scores = [], [], []
    for i in range(max(n_rows, max(by_id) + 1)):
        text = by_id.get(i)
        if text is None:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
        elif i in added:
            tokens.append(text)
            types.append(USER_DEFINED if text in VISIBLE_TOKENS or not added[i][1] else CONTROL)
        else:
            tokens.append(text)
            types.append(BYTE if re.fullmatch(r"<0x[0-9A-F]{2}>", text) else NORMAL)
        scores.append(-1000.0 if types[-1] != NORMAL else 0.0)
    merges = [m if isinstance(m, str) else " ".join(m)
              for m in tok_json["model"].get("merges", [])]
    if not merges:
        raise TailorError("the Gemma 4 tokenizer.json has no merges; llama.cpp's gemma4 "
                          "tokenizer cannot work without them")
    info = VocabInfo("gemma4", tokens, types, scores, merges, pre="gemma4",
                     pre_source="Gemma 4 tokenizer (llama.cpp's gemma4 type)")
    info.add_space_prefix = False
    _pad_to(info, n_rows)
    return info


def expert_scales(base_refs: list):
    """``expert_scale(module)`` for gemma4_expert_lora: the base's router.per_expert_scale of
    the module's layer."""
    by_layer = {int(m.group(1)): r for r in base_refs
                if r.name.endswith("router.per_expert_scale") and (m := _LAYER.search(r.name))}

    def expert_scale(module: str) -> np.ndarray:
        return by_layer[int(_LAYER.search(module).group(1))].read()

    return expert_scale
