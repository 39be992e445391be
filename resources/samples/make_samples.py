"""Generate the sample chat dataset (resources/samples/chat_sample.jsonl), deterministically.

"Pip", a cheerful word-game helper, answers every question in one fixed shape:
``<the answer in one sentence> ✂ Pip``. The facts are simple (opposites, animal sounds, colours,
counting, plurals) and the style never varies, so even a tiny model visibly picks it up in a few
hundred steps, and a real model learns the sign-off. Run:

    python resources/samples/make_samples.py            # rewrites chat_sample.jsonl
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "chat_sample.jsonl"
SIGN_OFF = " ✂ Pip"

OPPOSITES = [("hot", "cold"), ("big", "small"), ("fast", "slow"), ("up", "down"),
             ("day", "night"), ("happy", "sad"), ("open", "closed"), ("light", "dark"),
             ("early", "late"), ("full", "empty"), ("old", "new"), ("wet", "dry"),
             ("loud", "quiet"), ("hard", "soft"), ("left", "right"), ("first", "last")]
SOUNDS = [("cow", "moo"), ("dog", "woof"), ("cat", "meow"), ("duck", "quack"),
          ("sheep", "baa"), ("owl", "hoot"), ("lion", "roar"), ("bee", "buzz"),
          ("frog", "ribbit"), ("horse", "neigh"), ("pig", "oink"), ("mouse", "squeak")]
COLOURS = [("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
           ("a banana", "yellow"), ("a tomato", "red"), ("an orange", "orange"),
           ("a plum", "purple"), ("chocolate", "brown"), ("a flamingo", "pink"),
           ("the sun", "yellow"), ("a cloud", "white")]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
           "ten", "eleven", "twelve"]
PLURALS = [("cat", "cats"), ("box", "boxes"), ("mouse", "mice"), ("child", "children"),
           ("foot", "feet"), ("leaf", "leaves"), ("city", "cities"), ("tooth", "teeth"),
           ("bus", "buses"), ("sheep", "sheep"), ("goose", "geese"), ("knife", "knives")]


def qa_pairs() -> list[tuple[str, str]]:
    pairs = []
    for a, b in OPPOSITES:
        for x, y in ((a, b), (b, a)):
            for q in (f"What is the opposite of {x}?", f"Opposite of {x}?",
                      f"Tell me the opposite of {x}.", f"If it is not {x}, what is it?"):
                pairs.append((q, f"The opposite of {x} is {y}."))
    for animal, sound in SOUNDS:
        for q in (f"What sound does a {animal} make?", f"What does a {animal} say?",
                  f"How does a {animal} sound?"):
            pairs.append((q, f"A {animal} says {sound}."))
    for thing, colour in COLOURS:
        for q in (f"What colour is {thing}?", f"Which colour is {thing}?",
                  f"Tell me the colour of {thing}."):
            pairs.append((q, f"{thing[0].upper() + thing[1:]} is {colour}."))
    for animal, sound in SOUNDS[:8]:
        pairs.append((f"Which animal says {sound}?", f"A {animal} says {sound}."))
    for i in range(len(NUMBERS) - 1):
        for q in (f"What comes after {NUMBERS[i]}?", f"What number follows {NUMBERS[i]}?"):
            pairs.append((q, f"After {NUMBERS[i]} comes {NUMBERS[i + 1]}."))
        pairs.append((f"What comes before {NUMBERS[i + 1]}?",
                      f"Before {NUMBERS[i + 1]} comes {NUMBERS[i]}."))
    for one, many in PLURALS:
        for q in (f"What is the plural of {one}?", f"One {one}, two what?",
                  f"Plural of {one}?"):
            pairs.append((q, f"The plural of {one} is {many}."))
    return pairs


def examples(seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pairs = qa_pairs()
    rng.shuffle(pairs)
    out = []
    i = 0
    while i < len(pairs):
        # Mostly single questions; every sixth conversation has a follow-up turn.
        turns = 2 if len(out) % 6 == 5 and i + 1 < len(pairs) else 1
        messages = []
        for q, a in pairs[i:i + turns]:
            messages.append({"role": "user", "content": q})
            messages.append({"role": "assistant", "content": a + SIGN_OFF})
        out.append({"messages": messages})
        i += turns
    return out


def as_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> int:
    rows = examples()
    OUT.write_text(as_jsonl(rows), encoding="utf-8")
    print(f"wrote {len(rows)} conversations to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
