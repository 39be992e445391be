"""GGUF export: ``export_gguf(source, out, quant, ...) -> ExportResult`` (see gguf_export.py).

Re-exported lazily, so importing ``engine.export.kquants`` stays light."""
from __future__ import annotations

__all__ = ["export_gguf", "ExportResult"]


def __getattr__(name: str):
    if name in __all__:
        from . import gguf_export

        return getattr(gguf_export, name)
    raise AttributeError(name)
