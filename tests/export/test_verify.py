"""The llama.cpp check after an export: it fails a file that computes something else, and
records (without failing) the near-ties that a type's rounding flips on a flat model."""
from __future__ import annotations

import numpy as np
import pytest

from engine.export.gguf_export import export_gguf
from engine.export.verify import TOLERANCES, compare_logits, describe_logits, verify_llama_cpp
from engine.export.vocab import read_vocab
from engine.models.load import read_config

from .helpers import swapped_blocks_copy


def _logits(rows: list[list[float]]) -> list[np.ndarray]:
    return [np.array(rows, dtype=np.float32)]


def test_a_flip_between_near_tied_tokens_is_recorded_not_failed():
    tol = TOLERANCES["q8_0"]
    ref = _logits([[4.0, 1.0, 0.0], [2.00, 2.02, -4.0]])   # position 1: MLX picks token 1 by 0.02
    got = _logits([[4.01, 1.0, 0.0], [2.03, 2.01, -4.0]])  # llama.cpp picks token 0 there
    stats = compare_logits(ref, got, tol)
    assert stats["passed"]
    assert stats["agreement"] == 0.5 and stats["near_ties"] == 1
    text = describe_logits(stats, tol)
    assert "argmax agrees on 50.0% of 2 positions" in text
    assert "1 of the other 1 were near-ties in MLX (within 1.5% of the logit range)" in text
    assert "(needs 95% with near-ties)" in text


def test_a_flip_away_from_a_clear_winner_fails_even_with_small_differences():
    tol = TOLERANCES["q4_0"]  # the loosest type
    ref = _logits([[4.0, 1.0, 0.0], [3.0, 0.0, -4.0]])
    got = _logits([[4.0, 1.0, 0.0], [3.0, 3.5, -4.0]])  # token 1 wins in llama.cpp by 0.5
    stats = compare_logits(ref, got, tol)
    assert not stats["passed"] and stats["near_ties"] == 0
    assert "0 of the other 1 were near-ties" in describe_logits(stats, tol)


def test_logits_too_far_apart_fail_even_when_every_argmax_agrees():
    tol = TOLERANCES["f32"]
    ref = _logits([[4.0, 1.0, 0.0]])
    got = _logits([[4.0, 1.01, 0.0]])  # 0.01 / 4 = 2.5e-3 > 1e-3
    stats = compare_logits(ref, got, tol)
    assert stats["agreement"] == 1.0 and not stats["passed"]
    assert "max relative logit difference 2.50e-03 (allowed 0.001)" in describe_logits(stats, tol)


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
def test_a_file_with_two_blocks_mixed_up_fails_verification(quant, tiny_model, tmp_path):
    """An exporter bug that maps a tensor to the wrong block gives a file llama.cpp loads
    and runs; the logit comparison against MLX on the true model must catch it."""
    good = tiny_model("llama3")
    broken = swapped_blocks_copy(good, tmp_path / "broken-model")
    result = export_gguf(broken, tmp_path / "broken.gguf", quant, verify=False)
    config = read_config(good)
    vocab = read_vocab(good, config, config["vocab_size"])
    checks = verify_llama_cpp(result.path, vocab=vocab, model_dir=good, quant=quant,
                              adapter_dir=None, base_dir=good)
    by_name = {c["name"]: c for c in checks}
    assert by_name["llama.cpp tokenization"]["passed"]  # the tokenizer is fine ...
    logits = by_name["llama.cpp next token = MLX"]
    assert logits["passed"] is False, logits["detail"]  # ... the weights are not
    # clear winners flipped, not near-ties: far below what the type needs
    assert logits["agreement_with_ties"] < 0.5 * TOLERANCES[quant].min_agreement
    assert logits["max_rel_diff"] > 0.1
