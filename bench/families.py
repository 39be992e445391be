"""The figures for the README's supported-models table (issue 17): every newer family's tiny
fixture trained a few LoRA steps (tests/families/chain.py), fused and exported, measured in
llama.cpp against MLX with the adapter. Prints one Markdown row per family.

    .venv/bin/python bench/families.py            # every FAMILY_KINDS fixture
    .venv/bin/python bench/families.py smollm3 mixtral
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _detail(result, name: str) -> str:
    check = next(c for c in result.verification["checks"] if c["name"] == name)
    return ("pass" if check["passed"] else "FAIL") + f": {check['detail']}"


def main(kinds: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TAILOR_HOME"] = str(Path(tmp) / "home")
        from engine.capabilities import ARCHITECTURES
        from engine.events import TailorError
        from engine.export.gguf_export import export_gguf
        from engine.models.load import read_config
        from engine.tiny_models import FAMILY_KINDS, cached_tiny_model
        from tests.families.chain import fused_f32_figures, trained

        print("| family (fixture) | llama.cpp arch | tokens | argmax (F32) | max rel. logit "
              "error (F32) | adapter moved logits | Q8_0 check | adapter-only GGUF |")
        print("|---|---|---|---|---|---|---|---|")
        for kind in kinds or FAMILY_KINDS:
            folder = cached_tiny_model(kind)
            row = ARCHITECTURES[read_config(folder)["model_type"]]
            work = Path(tmp) / kind
            work.mkdir()
            gentle = kind in ("qwen3_moe", "mixtral", "granitemoe", "gpt_oss", "qwen3_5",
                              "gemma4", "gemma4_31b", "gemma4_mm", "gemma4_moe")
            info = trained(folder, work, kind, **({"learning_rate": 3e-3} if gentle else {}))
            fig = fused_f32_figures(kind, folder, info, work / "f32.gguf")
            q8 = export_gguf(info.name, work / "q8.gguf", "q8_0")
            try:
                lora = export_gguf(info.name, work / "lora.gguf", "f32", adapter_only=True)
                lora_text = "verified" if lora.verification["passed"] else "FAILED"
            except TailorError as e:
                lora_text = f"refused: {e.message}"
            print(f"| {row.family} ({kind}) | {row.gguf} | "
                  f"{'identical' if fig.tokens_identical else 'DIFFER'} | "
                  f"{fig.argmax_same}/{fig.positions} | {fig.max_rel_diff:.1e} | "
                  f"{fig.adapter_moved:.2f} | {_detail(q8, 'llama.cpp next token = MLX')} | "
                  f"{lora_text} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
