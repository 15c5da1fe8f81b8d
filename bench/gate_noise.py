"""How noisy a promotion gate's delta is: paired-bootstrap intervals of ROUGE-1 deltas on the first
--rows DialogSum test dialogues, between three real outputs scored against the first human summary:

- `human2`, `human3`: the second and third human summaries (two writers of equal skill);
- `lead`: the dialogue's first turn (a weak baseline).

On 500 rows human2 -> human3 is a small gain of chance (its interval crosses zero), lead -> human2 a
clear one; on 100 rows every interval is about ±3 ROUGE-1 points wide.
Prints one JSON line; --record writes the per-row scores (numbers only, no text) as the fixture
tests/fixtures/row_scores/dialogsum_rouge1.json that the gate's tests replay.

    python bench/gate_noise.py [--rows 500] [--data DIR] [--record FILE]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from kubetune_api.evaluation import DeltaIntervalSpec, RougeSpec
from kubetune_trainer.evaluation.bootstrap import mean_of, paired_interval
from kubetune_trainer.evaluation.rouge import rouge_with_rows

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dialogsum"
PAIRS = (("human2", "human3"), ("lead", "human2"))


def outputs(rows: list[dict]) -> dict[str, list[str]]:
    return {"human2": [r["summary2"] for r in rows], "human3": [r["summary3"] for r in rows],
            "lead": [r["dialogue"].split("\n")[0].split(":", 1)[-1].strip() for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="folder with DialogSum's test.jsonl")
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--record", type=Path, help="write the per-row ROUGE-1 F1 of each output here")
    args = parser.parse_args()
    lines = (args.data / "test.jsonl").read_text(encoding="utf-8").splitlines()[: args.rows]
    rows = [json.loads(line) for line in lines]
    references = [[r["summary1"]] for r in rows]
    per_row = {name: rouge_with_rows(texts, references, RougeSpec())[2]["rouge1"] for name, texts in outputs(rows).items()}
    spec = DeltaIntervalSpec()
    result = {"rows": len(rows), "level": spec.level, "samples": spec.samples,
              "rouge1": {name: round(sum(v) / len(v), 4) for name, v in per_row.items()}}
    for base, tuned in PAIRS:
        low, high = paired_interval(mean_of(per_row[base]), mean_of(per_row[tuned]), spec.level, spec.samples, seed=42)
        delta = sum(per_row[tuned]) / len(rows) - sum(per_row[base]) / len(rows)
        result[f"{base}->{tuned}"] = {"delta": round(delta, 4), "low": round(low, 4), "high": round(high, 4)}
    print(json.dumps(result))
    if args.record:
        source = f"DialogSum test, first {len(rows)} dialogues; ROUGE-1 F1 (rouge-score, stemmer) against summary1"
        args.record.write_text(json.dumps({"source": source, "rouge1": {k: [round(x, 6) for x in v] for k, v in per_row.items()}},
                                          indent=None) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
