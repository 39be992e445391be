"""The whole chain for one family fixture, as the family tests run it: a real LoRA training run
of a few steps, the fused F32 GGUF checked against MLX with the adapter (tokens, argmax at every
position, logits), a quantized export, the adapter-only GGUF and the Ollama template."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from transformers import AutoTokenizer

from engine.export.gguf_export import export_gguf
from engine.export.verify import llama_logits, mlx_logits, open_llama
from engine.library import AdapterInfo
from engine.ollama.templates import (TokenizerInfo, convert_chat_template, go_messages,
                                     jinja_renderer, probe_conversations)
from engine.ollama import gotemplate
from engine.tiny_models import SPECS
from engine.train.config import make_config
from engine.train.run import train_adapter
from tests.conftest import snapshot_tree
from tests.export.helpers import PROMPTS, TOKENIZER_STRINGS, failed_checks
from tests.train.conftest import write_toy_chat


def trained(model_dir: Path, tmp_path: Path, name: str, **settings) -> AdapterInfo:
    """A LoRA adapter from a real training run (few steps, a high rate: it moves the model)."""
    data = write_toy_chat(tmp_path / "toy.jsonl", n=16)
    return train_adapter(str(model_dir), data, name, make_config(**{
        "iters": 6, "eval_every": 0, "rank": 4, "batch_size": 4, "learning_rate": 1e-2,
        "baseline_prompts": 0, **settings}))


@dataclass
class Figures:
    """What the fused F32 GGUF measured against MLX with the adapter."""

    tokens_identical: bool
    argmax_same: int
    positions: int
    max_rel_diff: float
    adapter_moved: float  # max |logit(base+adapter) - logit(base)| / max |logit|


def field_str(reader, key: str) -> str:
    f = reader.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def fused_f32_figures(kind: str, model_dir: Path, info: AdapterInfo, out: Path) -> Figures:
    """Export the adapter fused at F32 (the built-in verification must pass), then measure the
    file in llama.cpp against MLX + adapter independently of that verification."""
    result = export_gguf(info.name, out, "f32")
    assert result.verification["passed"], failed_checks(result.verification)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    llm = open_llama(out)
    try:
        same_tokens = all(list(llm.tokenize(s.encode(), add_bos=True, special=True))
                          == tok.encode(s) for s in TOKENIZER_STRINGS)
        token_lists = [tok.encode(p) for p in PROMPTS]
        ours = [llama_logits(llm, t) for t in token_lists]
    finally:
        llm.close()
    ref = mlx_logits(model_dir, token_lists, adapter_dir=info.path)
    base = mlx_logits(model_dir, token_lists)
    reader = gguf.GGUFReader(str(out))
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert field_str(reader, "tokenizer.chat_template") == cfg["chat_template"]
    eos = int(reader.fields["tokenizer.ggml.eos_token_id"].parts[-1][0])
    assert eos == tok.convert_tokens_to_ids(SPECS[kind].eos_token)
    return Figures(
        same_tokens,
        sum(int((a.argmax(-1) == b.argmax(-1)).sum()) for a, b in zip(ref, ours)),
        sum(a.shape[0] for a in ref),
        max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ref, ours)),
        max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ref, base)))


def ollama_renders_as_jinja(model_dir: Path) -> None:
    """The Ollama template converted from the model's Jinja one renders every probe
    conversation to the same prompt text."""
    cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    info = TokenizerInfo(bos_token=cfg.get("bos_token") or "",
                         eos_token=SPECS[json.loads((model_dir / "TINY_MODEL.json")
                                                    .read_text())["kind"]].eos_token,
                         add_bos_token=bool(cfg.get("add_bos_token")))
    converted = convert_chat_template(cfg["chat_template"], info)
    assert converted.verified, converted.notes
    assert info.eos_token in converted.stops
    render = jinja_renderer(cfg["chat_template"], info)
    for messages in probe_conversations():
        if not converted.system_supported:
            messages = [m for m in messages if m["role"] != "system"]
        go = gotemplate.render(converted.template, go_messages(messages))
        assert go == render(messages, True), messages


def exact_fused_f32(kind: str, model_dir: Path, info: AdapterInfo, out: Path) -> Figures:
    """The trained adapter fused and exported at F32 answers in llama.cpp as MLX + adapter:
    the same tokens, argmax at every position, logits within 1e-3 relative, against a model
    the adapter really moved; returns the figures."""
    fig = fused_f32_figures(kind, model_dir, info, out)
    assert fig.tokens_identical
    assert fig.argmax_same == fig.positions  # argmax at every position
    assert fig.max_rel_diff < 1e-3
    assert fig.adapter_moved > 1e-2  # the comparison is against the trained model, not the base
    return fig


def whole_chain_verified(kind: str, model_dir: Path, tmp_path: Path, **settings) -> Figures:
    """Train a LoRA, then the fused F32 file = MLX + adapter in llama.cpp (tokens, argmax at
    every position, 1e-3 relative), the Q8_0 file and the adapter-only GGUF verified, the
    base untouched; returns the F32 figures."""
    before = snapshot_tree(model_dir)
    info = trained(model_dir, tmp_path, f"{kind}-lora", **settings)
    fig = exact_fused_f32(kind, model_dir, info, tmp_path / f"{kind}-f32.gguf")
    q8 = export_gguf(info.name, tmp_path / f"{kind}-q8_0.gguf", "q8_0")
    assert q8.verification["passed"], failed_checks(q8.verification)
    lora = export_gguf(info.name, tmp_path / f"{kind}-lora.gguf", "f32", adapter_only=True)
    assert lora.kind == "adapter"
    assert lora.verification["passed"], failed_checks(lora.verification)
    assert snapshot_tree(model_dir) == before  # the base is never touched
    return fig
