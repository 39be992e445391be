"""What Tailor can do with each model family: one table, read by the trainer's notes, the GGUF
exporter, the Ollama hand-off, ``tailor model info`` and the app's Model page.

Pure data and stdlib only (no MLX, no numpy), so the app and ``--help`` can import it cheaply.
Training itself works for any model type mlx-lm implements; the rows here are the families whose
whole path (train, fuse, GGUF export verified in llama.cpp) Tailor supports and tests.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """One Hugging Face ``model_type`` and what Tailor does with it."""

    model_type: str          # config.json's model_type
    family: str              # the name a user knows
    gguf: str | None         # llama.cpp's architecture name the exporter writes; None: no export
    ollama_adapter: bool     # Ollama applies a GGUF LoRA adapter of this family (else: fuse)


ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("llama", "Llama", "llama", ollama_adapter=True),
    # Mistral's config is Llama's; mlx-lm and llama.cpp both treat it as llama
    Architecture("mistral", "Mistral", "llama", ollama_adapter=True),
    Architecture("qwen2", "Qwen2 / Qwen2.5", "qwen2", ollama_adapter=True),
    Architecture("qwen3", "Qwen3", "qwen3", ollama_adapter=False),
    Architecture("gemma", "Gemma", "gemma", ollama_adapter=True),
    Architecture("gemma2", "Gemma 2", "gemma2", ollama_adapter=True),
    Architecture("gemma3_text", "Gemma 3 (text)", "gemma3", ollama_adapter=False),
    Architecture("phi3", "Phi-3 / Phi-4-mini", "phi3", ollama_adapter=True),
    # Newer families (issue 17). Ollama's adapter support for them is unconfirmed: fuse.
    Architecture("smollm3", "SmolLM3", "smollm3", ollama_adapter=False),
    Architecture("olmo2", "OLMo 2", "olmo2", ollama_adapter=False),
    Architecture("granite", "Granite 3 / 4 (dense)", "granite", ollama_adapter=False),
    Architecture("ministral3", "Ministral 3 / Mistral 3 (text)", "mistral3",
                 ollama_adapter=False),
    Architecture("qwen3_moe", "Qwen3-MoE", "qwen3moe", ollama_adapter=False),
    Architecture("qwen3_5", "Qwen3.5 (dense)", "qwen35", ollama_adapter=False),
    Architecture("qwen3_5_moe", "Qwen3.5-MoE", "qwen35moe", ollama_adapter=False),
    Architecture("qwen3_next", "Qwen3-Next", "qwen3next", ollama_adapter=False),
    Architecture("granitemoehybrid", "Granite 4 hybrid", "granitehybrid",
                 ollama_adapter=False),
    Architecture("granitemoe", "Granite MoE (3.x)", "granitemoe", ollama_adapter=False),
    Architecture("gpt_oss", "gpt-oss", "gpt-oss", ollama_adapter=False),
    Architecture("gemma4_text", "Gemma 4 (text)", "gemma4", ollama_adapter=False),
    # the multimodal checkpoints (all of Google's): the text model, without the towers
    Architecture("gemma4", "Gemma 4 (text of the multimodal checkpoint)", "gemma4",
                 ollama_adapter=False),
    # Mixtral is llama with experts in llama.cpp (Ollama applies attention LoRA as for llama)
    Architecture("mixtral", "Mixtral", "llama", ollama_adapter=True),
)}


@dataclass(frozen=True)
class Unsupported:
    """A family mlx-lm trains whose GGUF export Tailor refuses, and why (said as it stands)."""

    model_type: str
    family: str
    reason: str


# Checkpoints whose text model exports (ministral3) but whose multimodal wrapper does not.
UNSUPPORTED: dict[str, Unsupported] = {u.model_type: u for u in (
    Unsupported("mistral3", "Mistral 3 (with vision)",
                "Mistral 3 with its vision tower (model_type 'mistral3') is not supported for "
                "GGUF export; only the text model (ministral3) is"),
)}

# Hugging Face model types the GGUF exporter writes, and llama.cpp architectures whose LoRA
# adapters Ollama applies (derived from the table; never edit a copy).
GGUF_MODEL_TYPES: tuple[str, ...] = tuple(a.model_type for a in ARCHITECTURES.values() if a.gguf)
OLLAMA_ADAPTER_GGUF_ARCHITECTURES: frozenset[str] = frozenset(
    a.gguf for a in ARCHITECTURES.values() if a.gguf and a.ollama_adapter)


def gguf_architecture(model_type: str) -> str | None:
    """llama.cpp's architecture name for a Hugging Face model type, or None (no GGUF export)."""
    row = ARCHITECTURES.get(model_type)
    return row.gguf if row else None


def exports_gguf(model_type: str) -> bool:
    """Whether ``tailor export`` writes a GGUF for this Hugging Face model type."""
    return gguf_architecture(model_type) is not None


def ollama_applies_adapter(gguf_arch: str) -> bool:
    """Whether Ollama applies a GGUF LoRA adapter of this llama.cpp architecture."""
    return gguf_arch in OLLAMA_ADAPTER_GGUF_ARCHITECTURES


def gguf_support(config: dict) -> tuple[bool, str]:
    """(exports, reason) for a config.json: the reason says why not, in one sentence."""
    model_type = config.get("model_type", "") or "?"
    if model_type == "gemma3" and "text_config" in config:
        return False, ("Gemma 3 with a vision tower (model_type 'gemma3') is not supported for "
                       "GGUF export; only the text model (gemma3_text) is")
    if exports_gguf(model_type):
        return True, ""
    if model_type in UNSUPPORTED:
        return False, UNSUPPORTED[model_type].reason
    return False, (f"GGUF export does not support {model_type} yet; supported: "
                   f"{', '.join(sorted(GGUF_MODEL_TYPES))}")
