"""`kubetune-eval score`: scores outputs made elsewhere, as an EvalJob scores its generations.

    kubetune-eval score --predictions FILE --references FILE --reference-fields a[,b,...]
                        [--metrics rouge,bleu,...] [--rouge-tokenize T] [--bleu-tokenize T]

The predictions file holds one prediction per line (UTF-8); the references file is JSONL with
a row per prediction, each named field one reference (or a list of them). The settings not
given take an EvalJob's defaults (kubetune_api.evaluation), and the scoring is the generation
task's own. Prints {"examples", "scores", "signatures"} as JSON on stdout. Exit codes as
kubetune-eval's: 2 for a bad flag or metric, 3 for bad data (naming file and line).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pydantic import ValidationError

from kubetune_api.errors import ConfigError, DataError
from kubetune_api.evaluation import DEFAULT_METRICS, BleuSpec, BleuTokenizer, EvalConfig, RougeSpec, RougeTokenizer
from kubetune_trainer.entrypoint import run_reported
from kubetune_trainer.evaluation.dataset import load_items
from kubetune_trainer.evaluation.metrics import resolve_metrics
from kubetune_trainer.evaluation.tasks import task_for
from kubetune_trainer.reporting.status_reporter import StatusReporter


def parse_score_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kubetune-eval score", description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", required=True, help="text file, one prediction per line")
    parser.add_argument("--references", required=True, help="JSONL file, one row per prediction")
    parser.add_argument("--reference-fields", required=True, help="comma-separated fields of a row, each a reference")
    parser.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                        help="comma-separated metric names, as an EvalJob's metrics (default: %(default)s)")
    parser.add_argument("--rouge-tokenize", default=RougeSpec().tokenize.value, choices=[t.value for t in RougeTokenizer],
                        help="rouge.tokenize (default: %(default)s)")
    parser.add_argument("--bleu-tokenize", default=BleuSpec().tokenize.value, choices=[t.value for t in BleuTokenizer],
                        help="bleu.tokenize (default: %(default)s)")
    return parser.parse_args(argv)


def score_config(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig whose generation task scores these files (its model and output are unused)."""
    try:
        return EvalConfig.model_validate({
            "models": [{"name": "outputs", "path": args.predictions}],
            "dataset": {"path": args.references, "promptTemplate": "-",
                        "referenceFields": [f.strip() for f in args.reference_fields.split(",") if f.strip()]},
            "metrics": [m.strip() for m in args.metrics.split(",") if m.strip()],
            "rouge": {"tokenize": args.rouge_tokenize}, "bleu": {"tokenize": args.bleu_tokenize},
            "output": {"path": "."},
        })
    except ValidationError as e:
        raise ConfigError(f"kubetune-eval score: {e}") from e


def read_predictions(path: str) -> list[str]:
    """The file's lines (without their line ends); DataError when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the predictions file: {e}") from e
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the last line's end
    return [line.removesuffix("\r") for line in lines]


def score_files(args: argparse.Namespace) -> dict:
    config = score_config(args)
    metrics = resolve_metrics(config)  # MetricError for an unknown name, before any file is read
    predictions = read_predictions(args.predictions)
    items, _ = load_items(config)
    if len(predictions) != len(items):
        first = min(len(predictions), len(items)) + 1
        short, what = (args.predictions, "prediction") if len(predictions) < len(items) else (args.references, "reference row")
        raise DataError(f"{short} line {first}: no {what} there ({args.predictions} has {len(predictions)} lines, "
                        f"{args.references} has {len(items)} rows; they must pair line by line)")
    records = [{"prediction": p, "references": item.references} for p, item in zip(predictions, items)]
    scores, signatures = task_for(config).scores(records, metrics)
    return {"examples": len(records), "scores": scores, "signatures": signatures}


def score_main(argv: list[str]) -> int:
    args = parse_score_args(argv)
    code, result = run_reported("scoring", lambda: score_files(args), StatusReporter.from_env())
    if code == 0:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return code
