"""Writes instructions.jsonl (240 rows) and instructions-heldout.jsonl (40 other rows): a small
instruction-following dataset the project ships, and a held-out set for evaluation.

Every answer is computed, so the data is correct by construction and free of licence
questions. Run `python examples/data/make_instructions.py` to regenerate it.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ["river", "mountain", "lantern", "orchard", "harbor", "meadow", "candle", "window", "garden", "bridge",
         "forest", "violin", "pepper", "rocket", "island", "thunder", "marble", "pencil", "saddle", "canyon"]
COUNTRIES = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Canada": "Ottawa", "Peru": "Lima",
             "Norway": "Oslo", "Egypt": "Cairo", "Chile": "Santiago", "India": "New Delhi", "Spain": "Madrid",
             "Italy": "Rome", "Ghana": "Accra", "Poland": "Warsaw", "Vietnam": "Hanoi", "Mexico": "Mexico City"}


TRAIN, HELDOUT = 240, 40


def tasks(rng: random.Random):
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    yield "Add the two numbers.", f"{a} and {b}", str(a + b)
    c = rng.randint(-20, 40)
    yield "Convert the temperature from Celsius to Fahrenheit.", f"{c} °C", f"{c * 9 / 5 + 32:g} °F"
    words = rng.sample(WORDS, rng.randint(3, 6))
    yield "Sort the words alphabetically.", ", ".join(words), ", ".join(sorted(words))
    yield "Write the words in reverse order.", " ".join(words), " ".join(reversed(words))
    word = rng.choice(WORDS)
    yield "Spell the word backwards.", word, word[::-1]
    yield "Write the word in capital letters.", word, word.upper()
    country = rng.choice(sorted(COUNTRIES))
    yield "Name the capital city of the country.", country, COUNTRIES[country]
    numbers = [rng.randint(1, 50) for _ in range(rng.randint(3, 6))]
    yield "Give the largest number in the list.", ", ".join(map(str, numbers)), str(max(numbers))
    sentence = " ".join(rng.sample(WORDS, rng.randint(2, 7)))
    yield "Count the words in the text.", sentence, str(len(sentence.split()))


def main() -> None:
    rng = random.Random(7)
    rows, seen = [], set()
    while len(rows) < TRAIN + HELDOUT:
        for instruction, given, answer in tasks(rng):
            if (instruction, given) not in seen:  # held-out rows never repeat a training row
                seen.add((instruction, given))
                rows.append({"instruction": instruction, "input": given, "output": answer})
    rng.shuffle(rows)
    for name, part in (("instructions.jsonl", rows[:TRAIN]), ("instructions-heldout.jsonl", rows[TRAIN:TRAIN + HELDOUT])):
        out = Path(__file__).with_name(name)
        out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in part), encoding="utf-8")
        print(f"wrote {len(part)} rows to {out}")


if __name__ == "__main__":
    main()
