"""Task lm-eval, run: lm-evaluation-harness's own evaluator (simple_evaluate) on each model as the
evaluator loads it (kubetune_trainer.evaluation.loading: same dtype, device and merged adapter),
wrapped in lm-eval's HFLM. Scores are lm-eval's: every numeric metric of every task and group,
keyed '<task>/<metric>' ('<task>/<metric>.<filter>' for a filter other than none), with deltas
against the first model as for any task; lm-eval's stderr goes to scores.json. A delta's
paired-bootstrap interval comes from lm-eval's per-row values (log_samples) where the metric is
their mean (acc, acc_norm, exact_match, ...); corpus metrics (f1, mcc, bleu) and groups get none.

Not for this task: reusePredictions (every run runs the models) and the contamination check
(the rows are lm-eval's); lineage records the lm-eval and datasets versions, not data digests.
"""
from __future__ import annotations

import gc
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_api.reports import ModelResult, Sample, EvalPodReport
from kubetune_trainer.evaluation.bootstrap import delta_intervals, mean_of
from kubetune_trainer.evaluation.lm_eval_tasks import go_offline, sandbox_lm_eval_templates, score_key, task_manager
from kubetune_trainer.evaluation.loading import load_eval_model
from kubetune_trainer.evaluation.runner import Evaluation, Progress, output_file
from kubetune_trainer.evaluation.tasks.base import Statistics, short
from kubetune_trainer.reporting.lineage import evaluation_lineage
from kubetune_trainer.reporting.status_reporter import StatusReporter
from kubetune_trainer.reporting.versions import library_versions

log = logging.getLogger(__name__)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lm_eval_scores(results: dict) -> tuple[dict[str, float], dict[str, float], dict[tuple[str, str, str], str]]:
    """(scores, stderrs, {(task, metric, filter): key}) of lm-eval's results['results']."""
    scores, stderrs, keys = {}, {}, {}
    for task, values in sorted(results.get("results", {}).items()):
        for name, value in values.items():
            metric, _, filter_name = name.partition(",")
            if not filter_name or not _number(value):
                continue
            if metric.endswith("_stderr"):
                stderrs[score_key(task, metric[: -len("_stderr")], filter_name)] = float(value)
            else:
                keys[(task, metric, filter_name)] = score_key(task, metric, filter_name)
                scores[keys[(task, metric, filter_name)]] = float(value)
    return scores, stderrs, keys


def row_statistics(results: dict, keys: dict[tuple[str, str, str], str], scores: dict[str, float]) -> Statistics:
    """Per-row values (log_samples) of each score that is their mean, rows in doc_id order."""
    statistics = {}
    for (task, metric, filter_name), key in keys.items():
        rows = sorted((s for s in results.get("samples", {}).get(task, []) if s.get("filter", "none") == filter_name),
                      key=lambda s: s["doc_id"])
        values = [row.get(metric) for row in rows]
        if not values or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            continue
        statistic = mean_of([float(v) for v in values])
        if abs(statistic.score() - scores[key]) <= 1e-9:  # lm-eval's aggregation is this mean
            statistics[key] = statistic
    return statistics


def _samples(name: str, results: dict, count: int) -> list[Sample]:
    found = []
    for task, rows in results.get("samples", {}).items():
        for row in rows[:count]:
            arguments = row.get("arguments") or [[""]]
            prompt = arguments[0][0] if isinstance(arguments[0], (list, tuple)) else arguments[0]
            found.append(Sample(model=name, prompt=short(str(prompt)), prediction=short(str(row.get("filtered_resps"))),
                                reference=short(str(row.get("target"))), task=short(task)))
    return found[:count]


def evaluate_model(model, tokenizer, config: EvalConfig, manager) -> dict:
    """lm-eval's simple_evaluate on one loaded model: its results dict (with per-row samples)."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    spec = config.lm_eval
    # A sharded model goes in as dispatched (no parallelize): HFLM moves no weights and sends its
    # inputs to model.device, the first GPU, where the embeddings are.
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    return simple_evaluate(model=lm, tasks=list(spec.tasks), num_fewshot=spec.num_fewshot, limit=spec.limit,
                           task_manager=manager, log_samples=True)


class LmEvalRun:
    """Each model's lm-eval results, as a TaskRun keeps them (the runner's reports read these)."""

    name = None

    def __init__(self, config: EvalConfig):
        self.config = config
        self.entries: list[dict] = []
        self.first_statistics: Statistics = {}
        self.results: list[ModelResult] = []
        self.samples: list[Sample] = []

    def add(self, spec: EvalModel, results: dict, predictions: Path, load_seconds: float, started: float) -> ModelResult:
        scores, stderrs, keys = lm_eval_scores(results)
        statistics = row_statistics(results, keys, scores)
        examples = sum(len(rows) for rows in results.get("samples", {}).values())
        first = self.entries[0]["scores"] if self.entries else None
        delta = {k: v - first[k] for k, v in scores.items() if k in first} if first is not None else {}
        if not self.entries:
            self.first_statistics = statistics
        level = self.config.delta_interval
        intervals = delta_intervals(self.first_statistics, statistics, list(delta), level.level, level.samples,
                                    self.config.generation.seed)
        self.entries.append({
            "model": spec.name, "path": spec.path, "adapter": spec.adapter, "scores": scores, "stderr": stderrs,
            "delta": delta, "examples": examples, "loadSeconds": load_seconds, "cached": False,
            "evaluateSeconds": round(time.perf_counter() - started, 3), "predictionsPath": str(predictions),
            "nShot": results.get("n-shot", {}), "versions": results.get("versions", {}),
            **({"deltaInterval": {k: list(v) for k, v in intervals.items()}, "deltaLevel": level.level} if intervals else {})})
        result = ModelResult(model=spec.name, scores=scores, delta=delta, examples=examples,
                             delta_low={k: low for k, (low, _) in intervals.items()},
                             delta_high={k: high for k, (_, high) in intervals.items()},
                             delta_level=level.level if intervals else None, predictions_path=str(predictions))
        self.results.append(result)
        self.samples += _samples(spec.name, results, self.config.samples)
        return result

    def summary(self) -> dict:
        return {"task": self.config.task.value, "lmEval": self.config.lm_eval.model_dump(by_alias=True, mode="json"),
                "models": self.entries, "counts": {"examples": self.results[0].examples if self.results else 0,
                                                   "models": len(self.entries)}}


class LmEvalEvaluation(Evaluation):
    """The runner's Evaluation, each model scored by lm-eval instead of a built-in task."""

    def __init__(self, config: EvalConfig, reporter: StatusReporter, output: Path, rows: int):
        self.config, self.reporter, self.output, self.contamination = config, reporter, output, None
        self.runs, self.suite = [LmEvalRun(config)], False
        self.versions = library_versions("lm-eval", "datasets")
        self.lineage = evaluation_lineage(config, self.versions)
        reporter.report(EvalPodReport(lineage=self.lineage), final=True)
        self.progress = Progress(reporter, rows * len(config.models))
        go_offline()
        sandbox_lm_eval_templates()
        self.manager = task_manager(config.lm_eval)

    def run_model(self, spec: EvalModel) -> None:
        started = time.perf_counter()
        self.progress.model(spec.name, 0, "lm-eval").close()
        model, tokenizer = load_eval_model(spec, self.config)
        load_seconds = round(time.perf_counter() - started, 3)
        started = time.perf_counter()
        results = evaluate_model(model, tokenizer, self.config, self.manager)
        predictions = output_file(self.output, f"predictions-{spec.name}.jsonl")
        with predictions.open("w", encoding="utf-8") as out:
            for task, rows in results.get("samples", {}).items():
                for row in rows:
                    out.write(json.dumps({"task": task, **row}, ensure_ascii=False, default=str) + "\n")
        result = self.runs[0].add(spec, results, predictions, load_seconds, started)
        self.progress.advance(result.examples)
        log.info("%s: %s", spec.name, json.dumps(result.scores))
        self.reporter.report(self.report())
        del model
        gc.collect()
