"""Small GGUF files for the Ollama tests: real GGUF metadata (architecture, file type, tokens,
bos/eos ids, chat template) around one small tensor. Enough for the client and the fake server,
which read metadata only; the Modelfile test uses a GGUF llama.cpp loads (engine.export)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.tiny_models import CHATML_TEMPLATE, GEMMA_TEMPLATE, LLAMA3_TEMPLATE

FAMILIES = {
    # arch: (chat template, tokens, bos index or None, eos index, add_bos)
    "qwen2": (CHATML_TEMPLATE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b"],
              None, 2, False),
    "llama": (LLAMA3_TEMPLATE, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                                "<|end_header_id|>", "<|eot_id|>", "a"], 0, 4, True),
    "gemma": (GEMMA_TEMPLATE, ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"],
              2, 4, True),
    "qwen3": (CHATML_TEMPLATE, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b"],
              None, 2, False),
}


def make_gguf(path: Path | str, arch: str = "qwen2", *, file_type: int = 1,
              general_type: str = "model", chat_template: str | None = "default",
              payload_bytes: int = 4096) -> Path:
    """Write a GGUF with the family's template/tokens; file_type 1 = F16, 7 = Q8_0."""
    import gguf

    template, tokens, bos, eos, add_bos = FAMILIES[arch]
    path = Path(path)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_type(general_type)
    w.add_file_type(file_type)
    w.add_name(f"tailor-test-{arch}")
    if general_type == "adapter":
        w.add_string("adapter.type", "lora")
        w.add_float32("adapter.lora.alpha", 16.0)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(tokens))
    if bos is not None:
        w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(add_bos)
    if chat_template:
        w.add_chat_template(template if chat_template == "default" else chat_template)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight",
                 rng.standard_normal(payload_bytes // 2).astype(np.float16).reshape(-1, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
