"""Answer scores (engine/evaluate/scores.py) against examples worked out by hand."""
from __future__ import annotations

import pytest

from engine.evaluate.scores import (answer_scores, exact_match, lcs_length, normalize, rouge_l,
                                    token_f1)


def test_normalize_as_squad_does():
    assert normalize("  The River, flows!  ") == "river flows"
    assert normalize("An apple a day") == "apple day"
    assert normalize("theory") == "theory"  # an article only as a whole word


def test_exact_match():
    assert exact_match("The river.", "river") == 1.0
    assert exact_match("river fish", "fish river") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_by_hand():
    # answer: mountain river fish (3 words); reference: river fish swim today (4 words)
    # overlap 2: precision 2/3, recall 2/4, F1 = 2 * (2/3 * 1/2) / (2/3 + 1/2) = 4/7
    assert token_f1("mountain river fish", "river fish swim today") == pytest.approx(4 / 7)
    # repeated words count as often as both sides have them: overlap min(3,1)=1
    # precision 1/3, recall 1/1 -> F1 = 2 * (1/3) / (4/3) = 1/2
    assert token_f1("fish fish fish", "fish") == pytest.approx(0.5)
    assert token_f1("cat", "dog") == 0.0
    assert token_f1("", "dog") == 0.0


def test_rouge_l_by_hand():
    # the LCS of "a b c d e" and "a c e f": a c e (3); precision 3/5, recall 3/4
    # F = 2 * (3/5 * 3/4) / (3/5 + 3/4) = (18/20) / (27/20) = 2/3
    assert lcs_length("a b c d e".split(), "a c e f".split()) == 3
    assert rouge_l("one two three four five", "one three five six") == pytest.approx(2 / 3)
    # order matters for ROUGE-L and not for F1: "fish river" vs "river fish"
    assert rouge_l("fish river", "river fish") == pytest.approx(0.5)
    assert token_f1("fish river", "river fish") == 1.0


def test_answer_scores_keys_and_length():
    s = answer_scores("The mountain river", "mountain river fish")
    assert s["exact_match"] == 0.0 and s["words"] == 2.0
    assert s["f1"] == pytest.approx(0.8) and s["rouge_l"] == pytest.approx(0.8)
