"""Tailor's engine: data import, LoRA training on MLX, fuse, GGUF export and Ollama hand-off.

Importable without Qt; every long job reports typed events (``engine.events``).
"""
__version__ = "0.1.0"
