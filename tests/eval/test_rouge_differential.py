"""ROUGE's fast path (rouge-score-rs) against rouge-score itself on dialogue summaries: every
precision, recall and F1 of every ROUGE type of every pair must be the same float, bit for bit.

Data: 500 dialogues shaped like DialogSum's test split (speaker tags, turns on new lines, three
summaries each), written here from a seeded generator, so the suite needs nothing beside the
repository; bench/rouge_speed.py compares the two on DialogSum itself. Predictions are
each dialogue's first summary, references the other two (best of, as in an EvalJob); then the
dialogue itself as a long single reference.
"""
from __future__ import annotations

import random

import pytest
from rouge_score import rouge_scorer

from kubetune_api.evaluation import RougeSpec
from kubetune_trainer.evaluation.rouge import ROUGE_TYPES, fast_scorer_class, score_examples

SPECS = [RougeSpec(), RougeSpec(use_stemmer=False), RougeSpec(tokenize="char"), RougeSpec(tokenize="whitespace")]


# Words that stem alike and unlike, contractions, numbers, currency, hyphens, accents and CJK:
# what tokenizers and the Porter stemmer treat differently.
SUBJECTS = ["#Person1#", "#Person2#", "#Person3#", "Mr. Smith", "the manager", "Ms. Dawson", "the students"]
VERBS = ["asks", "asked", "is asking", "tells", "told", "invites", "invited", "wants", "wanted", "suggests",
         "suggested", "complains", "complained", "agrees", "agreed", "doesn't want", "can't find", "plans"]
OBJECTS = ["a dictation", "the memorandum", "an intra-office memo", "the running shoes", "a runner's guide",
           "happiness", "a happy ending", "the café's menu", "a naïve plan", "$20 tickets", "3.5 hours of work",
           "the 10 o'clock train", "e-mail correspondence", "instant messages", "his birthday party",
           "a job interview", "the apartment's rent", "学校的考试", "東京の天気"]
TAILS = ["", " at the airport", " because it's late", " for next week", " without any reason",
         " and they'll meet again", ", but #Person2# disagrees", " in the meeting room"]


def summary(rng: random.Random) -> str:
    clauses = [f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(TAILS)}"
               for _ in range(rng.randint(1, 3))]
    return ". ".join(clauses) + rng.choice([".", ".", "!", ""])


def dialogue(rng: random.Random) -> str:
    turns = [f"#Person{1 + t % 2}#: {summary(rng).replace('#Person1#', 'you').replace('#Person2#', 'I')}"
             for t in range(rng.randint(4, 14))]
    return "\n".join(turns)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rng = random.Random(20211)
    made = []
    for _ in range(500):
        first = summary(rng)
        # The other summaries retell the first in part, as a second annotator would.
        words = first.split()
        related = [" ".join(words[:rng.randint(1, len(words))] + summary(rng).split()[:rng.randint(0, 8)]) for _ in range(2)]
        made.append({"summary1": first, "summary2": related[0], "summary3": related[1], "dialogue": dialogue(rng)})
    return made


def assert_identical(predictions: list[str], references: list[list[str]], spec: RougeSpec) -> None:
    fast = fast_scorer_class()
    assert fast is not None, "rouge-score-rs is not installed (pip install -e '.[trainer]'): nothing to compare"
    expected, _ = score_examples(predictions, references, spec, rouge_scorer.RougeScorer)
    actual, _ = score_examples(predictions, references, spec, fast)
    differences = [(line, kind, tuple(e[kind]), tuple(a[kind])) for line, (e, a) in enumerate(zip(expected, actual))
                   for kind in ROUGE_TYPES if tuple(map(float, e[kind])) != tuple(map(float, a[kind]))]
    assert differences == [], f"{len(differences)} scores differ (line, type, rouge-score, fast): {differences[:5]}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.tokenize.value}-stem:{s.use_stemmer}")
def test_fast_rouge_is_rouge_score_on_dialogue_summaries(rows, spec):
    assert len(rows) == 500
    assert_identical([r["summary1"] for r in rows], [[r["summary2"], r["summary3"]] for r in rows], spec)


def test_fast_rouge_is_rouge_score_against_whole_dialogues(rows):
    # Long references (dialogues of 100-300 words with speaker tags and newlines) stress LCS and Lsum.
    assert_identical([r["summary1"] for r in rows[:200]], [[r["dialogue"]] for r in rows[:200]], RougeSpec())
