"""Ollama model names: what is accepted, what is refused and why, and collisions."""
from __future__ import annotations

import pytest

from engine.ollama.names import ModelNameError, find_existing, parse_model_name


@pytest.mark.parametrize("name,full", [
    ("my-model", "my-model:latest"),
    ("my_model.v2:q4_k_m", "my_model.v2:q4_k_m"),
    ("me/my-model:1.0", "me/my-model:1.0"),
    ("library/llama3", "llama3:latest"),
    ("_x", "_x:latest"),
    ("a" * 80, "a" * 80 + ":latest"),
])
def test_accepted(name, full):
    assert parse_model_name(name).full == full


@pytest.mark.parametrize("name,words", [
    ("", "empty"),
    ("My-Model", "uppercase"),
    ("my model", "not allow: ' '"),
    ("-model", "must start with a letter"),
    (".model", "must start with a letter"),
    ("my.ns/model", "may not contain '.'"),
    ("a/b/c", "more than one '/'"),
    ("model:", "no tag"),
    ("model@sha256:abc", "'@'"),
    ("a" * 81, "limit is 80"),
    ("modèle", "not allow: 'è'"),
    (" model", "spaces"),
])
def test_refused_with_reason(name, words):
    with pytest.raises(ModelNameError, match=words.replace("(", r"\(")) as e:
        parse_model_name(name)
    assert e.value.hint


def test_uppercase_hint_suggests_lowercase():
    with pytest.raises(ModelNameError) as e:
        parse_model_name("MyModel")
    assert "'mymodel'" in e.value.hint


def test_collisions_compare_like_ollama():
    existing = ["llama3:latest", "me/tuned:v1", "Qwen:7B"]
    assert find_existing("llama3", existing) == "llama3:latest"
    assert find_existing("library/llama3:latest", existing) == "llama3:latest"
    assert find_existing("me/tuned:v1", existing) == "me/tuned:v1"
    assert find_existing("tuned:v1", existing) is None
    assert find_existing("qwen:7b", existing) == "Qwen:7B"  # Ollama ignores case
    assert find_existing("llama3:8b", existing) is None
