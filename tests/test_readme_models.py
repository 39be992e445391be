"""The README's supported-models table is a copy of engine/capabilities.py: the same model types,
the same llama.cpp architecture, the same Ollama adapter answer (issue 17: each fact once)."""
from __future__ import annotations

from pathlib import Path

from engine.capabilities import ARCHITECTURES, UNSUPPORTED

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows() -> dict[str, list[str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Supported models", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[1] not in ("model_type", "---"):
            rows[cells[1]] = cells
    return rows


def test_every_family_of_the_capability_table_is_in_the_readme_and_no_other():
    assert set(_rows()) == set(ARCHITECTURES) | set(UNSUPPORTED)


def test_the_readme_says_what_the_table_says_for_each_family():
    for model_type, (_, _, arch, ollama, _) in _rows().items():
        if model_type in UNSUPPORTED:
            assert arch.startswith("refused"), model_type
            continue
        a = ARCHITECTURES[model_type]
        assert arch == a.gguf, model_type
        assert ollama.startswith("yes" if a.ollama_adapter else "no"), model_type
