"""ROUGE speed: Google's rouge-score against kubetune's ROUGE (rouge-score-rs underneath) on 500
DialogSum test pairs (prediction: the first human summary; references: the other two, best of).

Both sides split sentences the same way and give the same numbers (checked here, and bit for
bit in tests/eval/test_rouge_differential.py, on generated dialogues); the kubetune time is the whole corpus score
(kubetune_trainer.evaluation.rouge.rouge, means included). Best of --repeats runs:

    python bench/rouge_speed.py [--repeats 5] [--data DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rouge_score import rouge_scorer

from kubetune_api.evaluation import RougeSpec
from kubetune_trainer.evaluation.rouge import ROUGE_TYPES, fast_scorer_class, rouge, score_examples

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"
SETTINGS = {"default (Porter stemmer)": RougeSpec(), "default, no stemmer": RougeSpec(use_stemmer=False),
            "char": RougeSpec(tokenize="char")}


def best_time(work, repeats: int):
    """(fastest wall time in seconds, the last result)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with DialogSum's test.jsonl")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.data / "test.jsonl").read_text(encoding="utf-8").splitlines()][:500]
    predictions, references = [r["summary1"] for r in rows], [[r["summary2"], r["summary3"]] for r in rows]
    assert fast_scorer_class() is not None, "rouge-score-rs is not installed"
    print(f"{len(rows)} DialogSum pairs, 2 references each, best of {args.repeats} runs")
    print("| tokenize | rouge-score | kubetune | speedup |\n|---|---|---|---|")
    for name, spec in SETTINGS.items():
        slow, (examples, _) = best_time(lambda: score_examples(predictions, references, spec, rouge_scorer.RougeScorer),
                                        args.repeats)
        fast, (scores, _) = best_time(lambda: rouge(predictions, references, spec), args.repeats)
        expected = {kind: float(np.mean([e[kind].fmeasure for e in examples])) for kind in ROUGE_TYPES}
        assert expected == {kind: scores[kind] for kind in ROUGE_TYPES}, (expected, scores)
        print(f"| {name} | {slow * 1000:.1f} ms | {fast * 1000:.1f} ms | {slow / fast:.1f}× |")


if __name__ == "__main__":
    main()
