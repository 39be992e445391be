"""Generate the sample chat datasets (resources/samples/*.jsonl), deterministically.

"Pip", a cheerful word-game helper, answers every question in one fixed shape:
``<the answer in one sentence> ✂ Pip``. The facts are simple (opposites, animal sounds, colours,
counting, plurals) and the style never varies, so even a tiny model visibly picks it up in a few
hundred steps, and a real model learns the sign-off.

chat_sample.jsonl (240 conversations, about 100 facts) is the app's first-run sample.
demo_sample.jsonl is what `tailor demo` trains on: six of Pip's facts, each asked four ways, and
each fact asked in its own words (opposite, sound, colour, counting, plural, legs). That is a task
a two-layer model with random weights can memorise through a LoRA adapter in a minute, so the
demo's try-it prompts are answered exactly after training and not before. (On the 240-fact sample
such a model learns the shape of the answers but not which fact goes with which prompt.) Run:

    python resources/samples/make_samples.py            # rewrites both files
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "chat_sample.jsonl"
DEMO_OUT = Path(__file__).resolve().parent / "demo_sample.jsonl"
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


# (phrasings, answer): every question shape belongs to one fact only, so a prompt is told apart
# by most of its words, not by one word among many (which a LoRA on a random base cannot learn
# in the demo's budget).
DEMO_FACTS = [
    (["What is the opposite of hot?", "Opposite of hot?", "Tell me the opposite of hot.",
      "If it is not hot, what is it?"], "The opposite of hot is cold."),
    (["What sound does a cow make?", "What does a cow say?", "How does a cow sound?",
      "Which animal says moo?"], "A cow says moo."),
    (["What colour is the sky?", "Which colour is the sky?", "Tell me the colour of the sky.",
      "The sky is which colour?"], "The sky is blue."),
    (["What comes after two?", "What number follows two?", "Which number comes after two?",
      "Count on from two."], "After two comes three."),
    (["What is the plural of mouse?", "One mouse, two what?", "Plural of mouse?",
      "More than one mouse is called what?"], "The plural of mouse is mice."),
    (["How many legs does a spider have?", "Count a spider's legs.",
      "A spider has how many legs?", "How many legs on a spider?"], "A spider has eight legs."),
]


def demo_examples(seed: int = 0) -> list[dict]:
    pairs = [(q, answer) for phrasings, answer in DEMO_FACTS for q in phrasings]
    random.Random(seed).shuffle(pairs)
    return [{"messages": [{"role": "user", "content": q},
                          {"role": "assistant", "content": a + SIGN_OFF}]} for q, a in pairs]


def as_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main() -> int:
    for out, rows in ((OUT, examples()), (DEMO_OUT, demo_examples())):
        out.write_text(as_jsonl(rows), encoding="utf-8")
        print(f"wrote {len(rows)} conversations to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
