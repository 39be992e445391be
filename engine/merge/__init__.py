"""Adapter merging: several LoRA adapters of one base into a new adapter or a fused model
(`tailor merge`; methods concat, linear, ties, dare). Importing the package loads only the
settings (the app reads their help text); the work loads on first use."""
from .config import METHODS, MergeConfig

__all__ = ["METHODS", "MergeConfig", "merge_adapters"]


def __getattr__(name: str):
    if name == "merge_adapters":
        from .run import merge_adapters

        return merge_adapters
    raise AttributeError(name)
