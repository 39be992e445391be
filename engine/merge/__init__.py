"""Adapter merging: several LoRA adapters of one base into a new adapter or a fused model
(`tailor merge`; methods concat, linear, ties, dare)."""
from .config import METHODS, MergeConfig
from .run import merge_adapters

__all__ = ["METHODS", "MergeConfig", "merge_adapters"]
