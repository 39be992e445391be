"""Scores of an answer against its reference: exact match, token-level F1, ROUGE-L, length.

Both texts are normalised first as SQuAD's evaluation does (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed), so "The river." matches "river". Words are
the normalised text split on whitespace. F1 is over the multiset of words (their overlap);
ROUGE-L is the F-measure (beta 1) of the longest common subsequence of words, so word order
counts there and not in F1. Two empty texts score 1 (nothing was asked, nothing was said).
"""
from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "“”‘’«»…–—")


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def words(text: str) -> list[str]:
    return normalize(text).split()


def exact_match(answer: str, reference: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize(answer) == normalize(reference))


def token_f1(answer: str, reference: str) -> float:
    a, r = words(answer), words(reference)
    if not a or not r:
        return float(a == r)
    common = sum((Counter(a) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(r)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one row of the table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        row = [0]
        for j, y in enumerate(b):
            row.append(prev[j] + 1 if x == y else max(prev[j + 1], row[j]))
        prev = row
    return prev[-1]


def rouge_l(answer: str, reference: str) -> float:
    a, r = words(answer), words(reference)
    if not a or not r:
        return float(a == r)
    lcs = lcs_length(a, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def answer_scores(answer: str, reference: str) -> dict[str, float]:
    """{"exact_match", "f1", "rouge_l", "words"} of one answer."""
    return {"exact_match": exact_match(answer, reference), "f1": token_f1(answer, reference),
            "rouge_l": rouge_l(answer, reference), "words": float(len(words(answer)))}
