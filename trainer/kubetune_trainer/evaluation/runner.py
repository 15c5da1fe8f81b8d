"""One evaluation: every model in turn on the same items; predictions, scores.json and status out."""
from __future__ import annotations

import gc
import json
import logging
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
from tqdm import tqdm

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_trainer.evaluation.dataset import Item, load_items
from kubetune_trainer.evaluation.generation import generate
from kubetune_trainer.evaluation.loading import load_eval_model
from kubetune_trainer.evaluation.metrics import resolve_metrics, score_generation
from kubetune_trainer.evaluation.scoring import choice_scores, perplexity_scores, score_choices, score_texts
from kubetune_api.reports import EvalArtifacts, EvalPodReport, EvalProgress, ModelResult, Sample
from kubetune_trainer.status_reporter import MAX_TERMINATION_BYTES, StatusReporter, fit_json

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
# Detail kept in scores.json only: the status (and termination message) carry headline scores.
DETAIL_SUFFIXES = ("Precision", "Recall", "Low", "High")
DETAIL_KEYS = {"nll", "tokens"}
SAMPLE_CHARS = 300


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("kubetune", "torch", "transformers", "peft", "rouge-score", "sacrebleu"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _short(text: str) -> str:
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 3] + "..."


def _headline(scores: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in scores.items() if k not in DETAIL_KEYS and not k.endswith(DETAIL_SUFFIXES)}


def _records(config: EvalConfig, model, tokenizer, items: list[Item]) -> tuple[list[dict], int]:
    """Predictions (generation) or log-likelihoods for `items`; (records, truncated prompts)."""
    spec, chat = config.generation, config.dataset.chat_template
    if config.task is EvalTask.generation:
        outputs, truncated = generate(model, tokenizer, [i.prompt for i in items], spec, chat)
        return [{"line": i.line, "prompt": i.prompt, "prediction": o, "references": i.references}
                for i, o in zip(items, outputs)], truncated
    if config.task is EvalTask.multiple_choice:
        records = score_choices(model, tokenizer, items, spec.max_input_length, spec.batch_size, chat)
        return records, sum(r["truncated"] for r in records)
    return score_texts(model, tokenizer, items, spec.max_input_length, spec.batch_size), 0


def _scores(config: EvalConfig, metrics: dict, records: list[dict]) -> tuple[dict[str, float], dict[str, str]]:
    if config.task is EvalTask.generation:
        return score_generation(config, metrics, [r["prediction"] for r in records], [r["references"] for r in records])
    if config.task is EvalTask.multiple_choice:
        return choice_scores(records), {}
    return perplexity_scores(records), {}


def _samples(config: EvalConfig, name: str, records: list[dict]) -> list[Sample]:
    chosen = records[: config.samples]
    if config.task is EvalTask.generation:
        return [Sample(model=name, prompt=_short(r["prompt"]), prediction=_short(r["prediction"]),
                       reference=_short(r["references"][0])) for r in chosen]
    if config.task is EvalTask.multiple_choice:
        return [Sample(model=name, prompt=_short(r["prompt"]), prediction=_short(r["choices"][r["prediction"]]),
                       reference=_short(r["choices"][r["answer"]])) for r in chosen]
    return []  # perplexity has no prediction to show


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

    def report(self) -> None:
        self.reporter.report(EvalPodReport(progress=EvalProgress(
            model=self.name, done=self.done, total=self.total, percent=100.0 * self.done / max(1, self.total))))


def evaluate_model(config: EvalConfig, metrics: dict, spec: EvalModel, items: list[Item], progress: Progress) -> dict:
    """Loads, runs and scores one model; returns its entry in scores.json (plus its records)."""
    started = time.perf_counter()
    model, tokenizer = load_eval_model(spec)
    loaded = time.perf_counter()
    torch.manual_seed(config.generation.seed)  # sampled generations repeat for the same seed
    records, truncated = [], 0
    with progress.model(spec.name, len(items)) as bar:
        for first in range(0, len(items), config.generation.batch_size):
            chunk = items[first : first + config.generation.batch_size]
            chunk_records, chunk_truncated = _records(config, model, tokenizer, chunk)
            records += chunk_records
            truncated += chunk_truncated
            bar.update(len(chunk))
            progress.advance(len(chunk))
    scores, signatures = _scores(config, metrics, records)
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


def run(config: EvalConfig, reporter: StatusReporter) -> Path:
    """Evaluates every model as `config` says; returns the path of scores.json."""
    started = time.perf_counter()
    metrics = resolve_metrics(config)  # an unusable metric fails before any model loads
    items, n_rows = load_items(config)
    output = Path(config.output.path).absolute()
    output.mkdir(parents=True, exist_ok=True)
    progress = Progress(reporter, len(items) * len(config.models))

    entries, results, samples = [], [], []
    for spec in config.models:
        entry = evaluate_model(config, metrics, spec, items, progress)
        records = entry.pop("records")
        predictions = output / f"predictions-{spec.name}.jsonl"
        predictions.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        entry["predictionsPath"] = str(predictions)
        first = entries[0]["scores"] if entries else {}
        entry["delta"] = {k: v - first[k] for k, v in entry["scores"].items() if k in first} if entries else {}
        entries.append(entry)
        log.info("%s: %s", spec.name, json.dumps(_headline(entry["scores"])))
        results.append(ModelResult(model=spec.name, scores=_headline(entry["scores"]), delta=_headline(entry["delta"]),
                                   examples=len(items), predictions_path=str(predictions)))
        samples += _samples(config, spec.name, records)
        reporter.report(EvalPodReport(results=results, samples=samples))

    artifacts = EvalArtifacts(output_path=str(output), scores_path=str(output / SCORES_FILE))
    signatures = {k: v for entry in entries for k, v in entry.pop("signatures").items()}
    summary = {
        "task": config.task.value,
        "models": entries,
        "signatures": signatures,
        "counts": {"rows": n_rows, "examples": len(items), "models": len(entries)},
        "config": config.model_dump(by_alias=True, mode="json"),
        "wallTimeSeconds": round(time.perf_counter() - started, 3),
        "versions": _versions(),
    }
    Path(artifacts.scores_path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    headline = next(iter(results[0].scores), None)
    parts = [f"{r.model} {headline} {r.scores[headline]:.4f}" + (f" ({r.delta[headline]:+.4f})" if r.delta else "")
             for r in results if headline in r.scores]
    message = f"evaluated {len(results)} model(s) on {len(items)} examples: " + ", ".join(parts)
    final = EvalPodReport(progress=EvalProgress(model=results[-1].model, done=progress.done, total=progress.total, percent=100.0),
                          results=results, samples=samples, artifacts=artifacts)
    # Samples and all results go in the status; the termination message (4 KiB) gets what fits.
    reporter.finish(_termination_report(final.model_copy(update={"samples": None}), message), message)
    reporter.report(final, final=True)
    return Path(artifacts.scores_path)
