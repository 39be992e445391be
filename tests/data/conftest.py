"""Fixtures of the data tests: tokenizers of the tiny models, and dataset-writing helpers."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    """``tokenizer(kind)`` -> mlx-lm's TokenizerWrapper of a tiny model (loaded once)."""
    from mlx_lm.tokenizer_utils import load

    cache: dict = {}

    def get(kind: str = "qwen2"):
        if kind not in cache:
            cache[kind] = load(tiny_model(kind))
        return cache[kind]

    return get


def chat(i: int, answer: str | None = None) -> dict:
    return {"messages": [{"role": "user", "content": f"Question number {i}?"},
                         {"role": "assistant", "content": answer or f"Answer number {i}."}]}


def jsonl(rows) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


@pytest.fixture
def write(tmp_path):
    """``write(name, data: bytes|str)`` -> Path of a new file under a fresh folder."""

    def put(name: str, data) -> Path:
        p = tmp_path / "datasets" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    return put
