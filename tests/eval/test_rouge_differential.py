"""ROUGE's fast path (rouge-score-rs) against rouge-score itself on real summaries: every
precision, recall and F1 of every ROUGE type of every pair must be the same float, bit for bit.

Data: DialogSum's test split (three human summaries per dialogue) from the shared data folder
next to the repository (../shared/data/dialogsum/, see its README); it is not shipped with the
project. Predictions are each dialogue's first summary, references the other two (best of, as
in an EvalJob); then the dialogue itself as a long single reference.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from kubetune_api.evaluation import RougeSpec
from kubetune_trainer.evaluation.rouge import ROUGE_TYPES, fast_scorer_class, score_examples

DIALOGSUM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dialogsum" / "test.jsonl"
SPECS = [RougeSpec(), RougeSpec(use_stemmer=False), RougeSpec(tokenize="char"), RougeSpec(tokenize="whitespace")]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    assert DIALOGSUM.is_file(), (f"{DIALOGSUM} is missing: this test needs DialogSum's test split in the shared "
                                 "data folder next to the repository (../shared/data/dialogsum/test.jsonl)")
    return [json.loads(line) for line in DIALOGSUM.read_text(encoding="utf-8").splitlines()]


def assert_identical(predictions: list[str], references: list[list[str]], spec: RougeSpec) -> None:
    fast = fast_scorer_class()
    assert fast is not None, "rouge-score-rs is not installed (pip install -e '.[trainer]'): nothing to compare"
    expected, _ = score_examples(predictions, references, spec, rouge_scorer.RougeScorer)
    actual, _ = score_examples(predictions, references, spec, fast)
    differences = [(line, kind, tuple(e[kind]), tuple(a[kind])) for line, (e, a) in enumerate(zip(expected, actual))
                   for kind in ROUGE_TYPES if tuple(map(float, e[kind])) != tuple(map(float, a[kind]))]
    assert differences == [], f"{len(differences)} scores differ (line, type, rouge-score, fast): {differences[:5]}"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.tokenize.value}-stem:{s.use_stemmer}")
def test_fast_rouge_is_rouge_score_on_dialogsum_summaries(rows, spec):
    assert len(rows) == 500
    assert_identical([r["summary1"] for r in rows], [[r["summary2"], r["summary3"]] for r in rows], spec)


def test_fast_rouge_is_rouge_score_against_whole_dialogues(rows):
    # Long references (dialogues of 100-300 words with speaker tags and newlines) stress LCS and Lsum.
    assert_identical([r["summary1"] for r in rows[:200]], [[r["dialogue"]] for r in rows[:200]], RougeSpec())
