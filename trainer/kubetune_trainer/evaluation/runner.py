"""One evaluation: every model in turn on the same items (of each task, in a suite); predictions,
scores.json, report.md and status out.

The task (kubetune_trainer.evaluation.tasks) decides what a model does with the items and how
its records score; kubetune_trainer.evaluation.suite keeps each task's results and a suite's
aggregate; this module loads each model once for all tasks (one model in memory at a time),
times it, and writes and reports the results. Every file goes inside the output directory.
"""
from __future__ import annotations

import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from kubetune_api import layout
from kubetune_api.base import MAX_SAMPLES
from kubetune_api.errors import ConfigError
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_api.reports import Contamination, EvalArtifacts, EvalPodReport, EvalProgress, ModelResult
from kubetune_trainer.checks import check_evaluation
from kubetune_trainer.evaluation.contamination import check_contamination
from kubetune_trainer.evaluation.loading import load_eval_model
from kubetune_trainer.evaluation.record_cache import RecordCache, cache_directory, record_key
from kubetune_trainer.evaluation.suite import MEAN, TaskRun, aggregate, report_markdown
from kubetune_trainer.evaluation.tasks.base import Statistics
from kubetune_trainer.reporting.lineage import evaluation_lineage
from kubetune_trainer.outputs import resolve_output_dir
from kubetune_trainer.reporting.status_reporter import MAX_TERMINATION_BYTES, StatusReporter, fit_json
from kubetune_trainer.reporting.tracking import log_evaluation
from kubetune_trainer.reporting.versions import library_versions

log = logging.getLogger(__name__)

SCORES_FILE = layout.SCORES
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # greedy outputs may differ between them
REPORT_FILE = "report.md"


class Progress:
    """A progress bar on stderr, and EvalProgress in the job status (rate-limited by the reporter)."""

    def __init__(self, reporter: StatusReporter, total: int):
        self.reporter, self.total, self.done = reporter, total, 0
        self.name: str | None = None  # the model being evaluated

    def model(self, name: str, items: int, task: str | None = None) -> tqdm:
        self.name = name
        self.report()
        return tqdm(total=items, desc=f"{name} {task}" if task else name, unit="ex", file=sys.stderr)

    def advance(self, n: int) -> None:
        self.done += n
        self.report()

    def current(self, percent: float | None = None) -> EvalProgress:
        return EvalProgress(model=self.name, done=self.done, total=self.total,
                            percent=100.0 * self.done / max(1, self.total) if percent is None else percent)

    def report(self) -> None:
        self.reporter.report(EvalPodReport(progress=self.current()))


def output_file(directory: Path, name: str) -> Path:
    """directory/name, refused unless it lies directly in `directory` (a name is never a path)."""
    path = directory / name
    if path.parent != directory or name in ("", ".", ".."):
        raise ConfigError(f"output file name {name!r} would leave output.path {directory}")
    return path


def run_task(run: TaskRun, model, tokenizer, spec: EvalModel, progress: Progress) -> tuple[list[dict], int]:
    """One loaded model's records on one task, and how many prompts were truncated."""
    torch.manual_seed(run.config.generation.seed)  # sampled generations repeat for the same seed
    batch_size = run.config.generation.batch_size
    records, truncated = [], 0
    with progress.model(spec.name, len(run.items), run.name) as bar:
        for first in range(0, len(run.items), batch_size):
            chunk = run.items[first : first + batch_size]
            chunk_records, chunk_truncated = run.task.records(model, tokenizer, chunk)
            records += chunk_records
            truncated += chunk_truncated
            bar.update(len(chunk))
            progress.advance(len(chunk))
    return records, truncated


def task_entry(run: TaskRun, spec: EvalModel, records: list[dict], truncated: int, load_seconds: float,
               started: float, cached: bool) -> tuple[dict, Statistics]:
    """Scores one model's records on one task: (its entry in scores.json, the per-row statistics
    of its scores)."""
    scores, signatures, statistics = run.task.scored(records, run.metrics)
    return {"model": spec.name, "path": spec.path, "adapter": spec.adapter, "scores": scores, "examples": len(run.items),
            "truncatedPrompts": truncated, "loadSeconds": load_seconds, "cached": cached,
            "evaluateSeconds": round(time.perf_counter() - started, 3), "signatures": signatures}, statistics


def _termination_report(report: EvalPodReport, message: str) -> EvalPodReport:
    """`report` trimmed until the termination message fits: a suite's per-task results first,
    then trailing models' results."""
    def fits(candidate: EvalPodReport) -> bool:
        payload = {**candidate.model_dump(by_alias=True, exclude_none=True, mode="json"), "message": message[:200]}
        return len(fit_json(payload, "message")) <= MAX_TERMINATION_BYTES

    if report.suite and not fits(report):
        report = report.model_copy(update={"suite": None})
    results = list(report.results)
    while len(results) > 1 and not fits(report.model_copy(update={"results": results})):
        results.pop()
    return report.model_copy(update={"results": results})


class Evaluation:
    """The models of one config scored in turn on each task; what scores.json and the status collect."""

    def __init__(self, config: EvalConfig, reporter: StatusReporter, output: Path,
                 contamination: Optional[Contamination] = None):
        self.config, self.reporter, self.output, self.contamination = config, reporter, output, contamination
        self.runs = [TaskRun(name, part) for name, part in config.task_configs()]
        self.suite = config.tasks is not None
        self.versions = library_versions("rouge-score", "rouge-score-rs", "sacrebleu")
        self.lineage = evaluation_lineage(config, self.versions, {run.name: run.rows for run in self.runs})
        reporter.report(EvalPodReport(lineage=self.lineage, contamination=contamination), final=True)  # past the rate limit
        self.progress = Progress(reporter, sum(len(run.items) for run in self.runs) * len(config.models))
        self.cache = RecordCache(cache_directory() if config.reuse_predictions else None)

    def run_model(self, spec: EvalModel) -> None:
        """Loads one model once (not at all when every task's records are cached), scores it on
        every task, writes its predictions and reports."""
        keys = [record_key(run.name, run.config, spec, self.lineage, DEVICE) for run in self.runs]
        cached = [self.cache.load(key, run.items, run.config.task) for key, run in zip(keys, self.runs)]
        model = tokenizer = None
        started = time.perf_counter()
        if any(hit is None for hit in cached):
            model, tokenizer = load_eval_model(spec, self.config)
        load_seconds = round(time.perf_counter() - started, 3)
        for run, key, hit in zip(self.runs, keys, cached):
            started = time.perf_counter()
            if hit is None:
                records, truncated = run_task(run, model, tokenizer, spec, self.progress)
                self.cache.save(key, records, truncated)
            else:
                records, truncated = hit
                self.progress.advance(len(run.items))
                log.info("%s%s: predictions reused from the cache (%s)", spec.name, f" {run.name}" if run.name else "", key[:12])
            entry, statistics = task_entry(run, spec, records, truncated, load_seconds, started, cached=hit is not None)
            predictions = output_file(self.output, run.predictions_name(spec.name))
            predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
            result = run.add(entry, records, predictions, statistics)
            log.info("%s%s: %s", spec.name, f" {run.name}" if run.name else "", json.dumps(result.scores))
            self.reporter.report(self.report())
        del model  # free its memory before the next model loads
        gc.collect()

    def report(self, **fields) -> EvalPodReport:
        """Results (a suite's: the aggregate table, and per task), samples, and `fields`."""
        samples = [s for run in self.runs for s in run.samples][:MAX_SAMPLES]  # the status shows a few
        fields.setdefault("contamination", self.contamination)
        if not self.suite:
            return EvalPodReport(results=self.runs[0].results, samples=samples, **fields)
        return EvalPodReport(results=aggregate(self.runs), suite=[run.status() for run in self.runs], samples=samples,
                             **fields)

    def write_scores(self, wall_seconds: float) -> Path:
        """scores.json: every model's entry (per task in a suite, with the aggregate), the config,
        counts, library versions and lineage."""
        if self.suite:
            scores = {"tasks": [{"name": run.name, **run.summary()} for run in self.runs],
                      "aggregate": [r.model_dump(by_alias=True, mode="json") for r in aggregate(self.runs)]}
        else:
            scores = self.runs[0].summary()
        summary = {
            **scores,
            **({"contamination": self.contamination.model_dump(by_alias=True, mode="json")} if self.contamination else {}),
            "config": self.config.model_dump(by_alias=True, mode="json"),
            "wallTimeSeconds": round(wall_seconds, 3),
            "versions": self.versions,
            "lineage": self.lineage.model_dump(by_alias=True, exclude_none=True, mode="json"),
        }
        path = output_file(self.output, SCORES_FILE)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return path

    def write_report(self, results: list[ModelResult]) -> Path:
        """report.md: the scores (a suite's aggregate table) with deltas against the first model."""
        what = f"{len(self.runs)} tasks" if self.suite else self.config.task.value
        path = output_file(self.output, REPORT_FILE)
        path.write_text(report_markdown(f"Evaluation: {what}, {len(results)} model(s)", results), encoding="utf-8")
        return path

    def finish(self, scores_path: Path) -> None:
        """report.md, the scores to the MLflow run (spec.tracking), the final status (all results
        and samples) and termination message (what fits)."""
        results = self.report().results
        tracked = log_evaluation(self.config, results, scores_path)
        scores = results[0].scores
        headline = MEAN if MEAN in scores else next(iter(scores), None)
        parts = [f"{r.model} {headline} {r.scores[headline]:.4f}" + (f" ({r.delta[headline]:+.4f})" if r.delta else "")
                 for r in results if headline in r.scores]
        examples = f"{results[0].examples} examples"
        where = f"{len(self.runs)} tasks ({examples})" if self.suite else examples
        message = f"evaluated {len(results)} model(s) on {where}: " + ", ".join(parts)
        artifacts = EvalArtifacts(output_path=str(self.output), scores_path=str(scores_path),
                                  report_path=str(self.write_report(results)))
        final = self.report(progress=self.progress.current(percent=100.0), artifacts=artifacts, tracking=tracked)
        self.reporter.finish(_termination_report(final.model_copy(update={"samples": None}), message), message)
        self.reporter.report(final, final=True)


def run(config: EvalConfig, reporter: StatusReporter) -> Path:
    """Evaluates every model as `config` says; returns the path of scores.json."""
    started = time.perf_counter()
    checked = check_evaluation(config)  # data, templates, models, adapters, metric names: before any model loads
    output = resolve_output_dir(config.output.path)
    if config.lm_eval is not None:  # lm-eval's own tasks and evaluator (no contamination check: its rows)
        from kubetune_trainer.evaluation.lm_eval_run import LmEvalEvaluation

        evaluation = LmEvalEvaluation(config, reporter, output, checked.rows)
    else:
        contamination = check_contamination(config)  # with action refuse, fails here
        evaluation = Evaluation(config, reporter, output, contamination)
    output.mkdir(parents=True, exist_ok=True)
    for spec in config.models:
        evaluation.run_model(spec)
    scores_path = evaluation.write_scores(time.perf_counter() - started)
    evaluation.finish(scores_path)
    return scores_path
