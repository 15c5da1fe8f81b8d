"""The tasks of one evaluation (the single dataset, or each task of a suite: spec.tasks), what each
collects per model, and a suite's aggregate table.

The aggregate (HELM-style: models as rows, '<task>/<metric>' as columns) is what status.results
holds for a suite, plus `mean`: the unweighted mean, over the suite's tasks other than
perplexity (lower is better, unbounded), of each task's primary score: the first score of its
first metric (exactMatch, rouge1, tokenF1, accuracy, ...), BLEU divided by 100 so that every
term lies in 0-1. report.md shows the same table, with deltas against the first model.

Light: no torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalConfig
from kubetune_api.reports import ModelResult, Sample, SuiteTaskResult
from kubetune_trainer.evaluation.dataset import load_items
from kubetune_trainer.evaluation.metrics import resolve_metrics
from kubetune_trainer.evaluation.bootstrap import delta_intervals
from kubetune_trainer.evaluation.tasks import task_for
from kubetune_trainer.evaluation.tasks.base import Statistics

MEAN = "mean"


class TaskRun:
    """One task of an evaluation: its items, and each model's scores.json entry, result and samples."""

    def __init__(self, name: Optional[str], config: EvalConfig):
        self.name, self.config = name, config  # name: None for the single dataset
        self.task = task_for(config)
        self.metrics = resolve_metrics(config)  # Hub metrics load (or fail) before any model
        self.items, self.rows = load_items(config, self.task)
        self.entries: list[dict] = []
        self.first_statistics: Statistics = {}
        self.results: list[ModelResult] = []
        self.samples: list[Sample] = []

    def predictions_name(self, model: str) -> str:
        return f"predictions-{model}.jsonl" if self.name is None else f"predictions-{self.name}-{model}.jsonl"

    def add(self, entry: dict, records: list[dict], predictions: Path, statistics: Statistics) -> ModelResult:
        """Keeps one model's entry (with its delta against the first model and that delta's
        paired-bootstrap interval), result and samples."""
        entry["predictionsPath"] = str(predictions)
        first = self.entries[0]["scores"] if self.entries else None
        entry["delta"] = {k: v - first[k] for k, v in entry["scores"].items() if k in first} if first is not None else {}
        if not self.entries:
            self.first_statistics = statistics  # the first model has no delta; the others pair with its rows
        spec = self.config.delta_interval
        intervals = delta_intervals(self.first_statistics, statistics, list(self.task.headline(entry["delta"])),
                                    spec.level, spec.samples, self.config.generation.seed)
        if intervals:
            entry.update(deltaInterval={k: list(v) for k, v in intervals.items()}, deltaLevel=spec.level)
        self.entries.append(entry)
        result = ModelResult(model=entry["model"], scores=self.task.headline(entry["scores"]),
                             delta=self.task.headline(entry["delta"]), examples=len(self.items),
                             delta_low={k: low for k, (low, _) in intervals.items()},
                             delta_high={k: high for k, (_, high) in intervals.items()},
                             delta_level=spec.level if intervals else None, cached=entry.get("cached") or None,
                             predictions_path=str(predictions))
        self.results.append(result)
        self.samples += [s.model_copy(update={"task": self.name}) for s in self.task.samples(entry["model"], records)]
        return result

    def summary(self) -> dict:
        """This task's part of scores.json."""
        signatures = {k: v for entry in self.entries for k, v in entry.pop("signatures", {}).items()}
        return {"task": self.config.task.value, "models": self.entries, "signatures": signatures,
                "counts": {"rows": self.rows, "examples": len(self.items), "models": len(self.entries)}}

    def status(self) -> SuiteTaskResult:
        return SuiteTaskResult(name=self.name, task=self.config.task.value, examples=len(self.items), results=self.results)


def mean_term(task: EvalTask, scores: dict[str, float]) -> Optional[float]:
    """A task's term in the suite's mean: its primary score (BLEU over 100); None for perplexity."""
    if task == EvalTask.perplexity or not scores:
        return None
    name, value = next(iter(scores.items()))
    return value / 100 if name == "bleu" else value


def aggregate(runs: list[TaskRun]) -> list[ModelResult]:
    """A suite's table: for each model scored on every task, '<task>/<metric>' and mean, with
    deltas against the first model."""
    rows = []
    for index in range(min(len(run.results) for run in runs)):
        scores = {f"{run.name}/{k}": v for run in runs for k, v in run.results[index].scores.items()}
        terms = [t for run in runs if (t := mean_term(run.config.task, run.results[index].scores)) is not None]
        if terms:
            scores[MEAN] = sum(terms) / len(terms)
        rows.append(ModelResult(model=runs[0].results[index].model, scores=scores,
                                examples=sum(len(run.items) for run in runs)))
    for row in rows[1:]:
        row.delta = {k: v - rows[0].scores[k] for k, v in row.scores.items() if k in rows[0].scores}
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(row) + " |" for row in rows]


def report_markdown(title: str, results: list[ModelResult]) -> str:
    """report.md: models as rows, scores as columns; then each model's delta against the first."""
    columns = list(dict.fromkeys(k for r in results for k in r.scores))

    def cells(values: dict[str, float], sign: str = "") -> list[str]:
        return [format(values[c], f"{sign}.4f") if c in values else "" for c in columns]

    lines = [f"# {title}", "", *_table(["model", *columns], [[r.model, *cells(r.scores)] for r in results])]
    if len(results) > 1:
        lines += ["", f"## Delta against {results[0].model}", "",
                  *_table(["model", *columns], [[r.model, *cells(r.delta, "+")] for r in results[1:]])]
    return "\n".join(lines) + "\n"
