"""One evaluation: every model in turn on the same items; predictions, scores.json and status out.

The task (kubetune_trainer.evaluation.tasks) decides what a model does with the items and how
its records score; this module loads the models, times them, compares them with the first,
and writes and reports the results. Every file goes inside the output directory.
"""
from __future__ import annotations

import gc
import json
import logging
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from kubetune_api.errors import ConfigError
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_api.reports import EvalArtifacts, EvalPodReport, EvalProgress, ModelResult, Sample
from kubetune_trainer.checks import check_evaluation
from kubetune_trainer.evaluation.dataset import load_items
from kubetune_trainer.evaluation.loading import load_eval_model
from kubetune_trainer.evaluation.metrics import resolve_metrics
from kubetune_trainer.evaluation.tasks import Item, Task, task_for
from kubetune_trainer.outputs import resolve_output_dir
from kubetune_trainer.status_reporter import MAX_TERMINATION_BYTES, StatusReporter, fit_json
from kubetune_trainer.versions import library_versions

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"


class Progress:
    """A progress bar on stderr, and EvalProgress in the job status (rate-limited by the reporter)."""

    def __init__(self, reporter: StatusReporter, total: int):
        self.reporter, self.total, self.done = reporter, total, 0
        self.name: str | None = None  # the model being evaluated

    def model(self, name: str, items: int) -> tqdm:
        self.name = name
        self.report()
        return tqdm(total=items, desc=name, unit="ex", file=sys.stderr)

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


def evaluate_model(task: Task, metrics: dict, spec: EvalModel, items: list[Item], progress: Progress) -> dict:
    """Loads, runs and scores one model; returns its entry in scores.json (plus its records)."""
    started = time.perf_counter()
    model, tokenizer = load_eval_model(spec)
    loaded = time.perf_counter()
    torch.manual_seed(task.config.generation.seed)  # sampled generations repeat for the same seed
    batch_size = task.config.generation.batch_size
    records, truncated = [], 0
    with progress.model(spec.name, len(items)) as bar:
        for first in range(0, len(items), batch_size):
            chunk = items[first : first + batch_size]
            chunk_records, chunk_truncated = task.records(model, tokenizer, chunk)
            records += chunk_records
            truncated += chunk_truncated
            bar.update(len(chunk))
            progress.advance(len(chunk))
    scores, signatures = task.scores(records, metrics)
    del model  # free its memory before the next model loads
    gc.collect()
    return {"model": spec.name, "path": spec.path, "adapter": spec.adapter, "scores": scores, "examples": len(items),
            "truncatedPrompts": truncated, "loadSeconds": round(loaded - started, 3),
            "evaluateSeconds": round(time.perf_counter() - loaded, 3), "signatures": signatures, "records": records}


def _termination_report(report: EvalPodReport, message: str) -> EvalPodReport:
    """`report` with trailing models' results dropped until the termination message fits."""
    results = list(report.results)
    while len(results) > 1:
        payload = {**report.model_copy(update={"results": results}).model_dump(by_alias=True, exclude_none=True, mode="json"),
                   "message": message[:200]}
        if len(fit_json(payload, "message")) <= MAX_TERMINATION_BYTES:
            break
        results.pop()
    return report.model_copy(update={"results": results})


class Evaluation:
    """The models of one config scored in turn; what scores.json and the status collect."""

    def __init__(self, config: EvalConfig, reporter: StatusReporter, output: Path):
        self.config, self.reporter, self.output = config, reporter, output
        self.task = task_for(config)
        self.metrics = resolve_metrics(config)  # Hub metrics load (or fail) before any model
        self.items, self.rows = load_items(config, self.task)
        self.progress = Progress(reporter, len(self.items) * len(config.models))
        self.entries: list[dict] = []
        self.results: list[ModelResult] = []
        self.samples: list[Sample] = []

    def run_model(self, spec: EvalModel) -> None:
        """Scores one model, writes its predictions and reports its result."""
        task = self.task
        entry = evaluate_model(task, self.metrics, spec, self.items, self.progress)
        records = entry.pop("records")
        predictions = output_file(self.output, f"predictions-{spec.name}.jsonl")
        predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        entry["predictionsPath"] = str(predictions)
        first = self.entries[0]["scores"] if self.entries else None
        entry["delta"] = {k: v - first[k] for k, v in entry["scores"].items() if k in first} if first is not None else {}
        self.entries.append(entry)
        log.info("%s: %s", spec.name, json.dumps(task.headline(entry["scores"])))
        self.results.append(ModelResult(model=spec.name, scores=task.headline(entry["scores"]),
                                        delta=task.headline(entry["delta"]), examples=len(self.items),
                                        predictions_path=str(predictions)))
        self.samples += task.samples(spec.name, records)
        self.reporter.report(EvalPodReport(results=self.results, samples=self.samples))

    def write_scores(self, wall_seconds: float) -> Path:
        """scores.json: every model's entry, the config, counts and library versions."""
        signatures = {k: v for entry in self.entries for k, v in entry.pop("signatures").items()}
        summary = {
            "task": self.config.task.value,
            "models": self.entries,
            "signatures": signatures,
            "counts": {"rows": self.rows, "examples": len(self.items), "models": len(self.entries)},
            "config": self.config.model_dump(by_alias=True, mode="json"),
            "wallTimeSeconds": round(wall_seconds, 3),
            "versions": library_versions("rouge-score", "sacrebleu"),
        }
        path = output_file(self.output, SCORES_FILE)
        path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return path

    def finish(self, scores_path: Path) -> None:
        """The final status (all results and samples) and termination message (what fits)."""
        results = self.results
        headline = next(iter(results[0].scores), None)
        parts = [f"{r.model} {headline} {r.scores[headline]:.4f}" + (f" ({r.delta[headline]:+.4f})" if r.delta else "")
                 for r in results if headline in r.scores]
        message = f"evaluated {len(results)} model(s) on {len(self.items)} examples: " + ", ".join(parts)
        artifacts = EvalArtifacts(output_path=str(self.output), scores_path=str(scores_path))
        final = EvalPodReport(progress=self.progress.current(percent=100.0), results=results, samples=self.samples,
                              artifacts=artifacts)
        self.reporter.finish(_termination_report(final.model_copy(update={"samples": None}), message), message)
        self.reporter.report(final, final=True)


def run(config: EvalConfig, reporter: StatusReporter) -> Path:
    """Evaluates every model as `config` says; returns the path of scores.json."""
    started = time.perf_counter()
    check_evaluation(config)  # data, templates, models, adapters, metric names: before any model loads
    output = resolve_output_dir(config.output.path)
    evaluation = Evaluation(config, reporter, output)
    output.mkdir(parents=True, exist_ok=True)
    for spec in config.models:
        evaluation.run_model(spec)
    scores_path = evaluation.write_scores(time.perf_counter() - started)
    evaluation.finish(scores_path)
    return scores_path
