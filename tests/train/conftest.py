"""Helpers for the training tests: a learnable toy chat set and a CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ANSWER = "mountain river fish"
TOPICS = ["the book", "a horse", "the wood", "my friend", "science", "the room", "a car",
          "the letter", "the idea", "a face", "the base", "a mile"]


def write_toy_chat(path: Path, n: int = 48, answer: str = ANSWER, seed: int = 0) -> Path:
    """Every question gets the same answer: a task the tiny models learn in a few dozen steps."""
    import random

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            q = f"Tell me about {rng.choice(TOPICS)} number {i}."
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


@pytest.fixture
def toy_data(tmp_path) -> Path:
    return write_toy_chat(tmp_path / "toy.jsonl")


def tailor_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "engine", *args]


def run_tailor(*args: str, input: str | None = None, timeout: float = 300
               ) -> subprocess.CompletedProcess:
    return subprocess.run(tailor_cmd(*args), cwd=REPO, capture_output=True, text=True,
                          input=input, timeout=timeout, env={**os.environ})


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
