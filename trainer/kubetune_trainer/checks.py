"""The pod's check phase: everything about a config that needs its files, checked CPU-only
before any Accelerator, model or GPU work.

The operator reads no user files; the pod checks them with the workload's own identity and
volumes: every data file and template, the model's location, and the output directory.
Failures are the named errors of kubetune_api.errors (DataError: InvalidDataset,
ModelSourceError: InvalidModel, ConfigError: InvalidConfig, MetricError: UnknownMetric); the
CLIs write their reason into the termination message and the operator does not retry them.

Remote sources (hf://, s3://, gs://, az://) are resolved here first (kubetune_trainer.sources):
SourceError reasons SourceNotFound, RevisionNotFound, SourceUnauthorized, SourceUnavailable.

Light at import (no torch, no transformers): `kubetune-train --check-only` runs it alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from kubetune_api.catalog import hub_metric_names
from kubetune_api.errors import ConfigError, ModelSourceError
from kubetune_api.evaluation import ContaminationAction, EvalConfig
from kubetune_api.training import TrainingConfig
from kubetune_trainer.evaluation.dataset import check_eval_dataset
from kubetune_trainer.evaluation.sizing import check_evaluation_memory  # torch only once it sizes a model
from kubetune_trainer.evaluation.textmetrics import bleu_metric
from kubetune_trainer.data.chat_check import check_chat_eval, check_chat_rows
from kubetune_trainer.data.rows import check_dataset
from kubetune_trainer.model.location import locate_model, resolve_path
from kubetune_trainer.outputs import resolve_output_dir
from kubetune_trainer.data.rows import retention_source, task_sources
from kubetune_trainer.sources import fetch_data, fetch_model, is_remote_source, objects
from kubetune_trainer.sources.progress import ProgressSink

MAX_ROWS_TO_CHECK = 1000  # rendered per file; the rest are counted (the run renders them all)


@dataclass(frozen=True)
class CheckReport:
    rows: int  # dataset rows seen
    models: tuple[Path, ...]  # where each model is
    output: Path  # the output directory, resolved

    def describe(self) -> str:
        return (f"check passed: {self.rows} dataset rows, model at {', '.join(map(str, self.models))}, "
                f"output in {self.output}")


def check_output_dir(path: str, field: str = "output.path") -> Path:
    """The resolved output directory (see outputs.resolve_output_dir), which must be, or be
    creatable as, a writable directory. Creates nothing."""
    directory = resolve_output_dir(path, field)
    existing = directory
    while not existing.exists():  # the nearest existing ancestor must take the new directories
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{field} {path!r}: {existing} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{field} {path!r}: {existing} is not writable by this pod (uid {os.getuid()})")
    return directory


def check_model_path(path: str, field: str = "model.path") -> Path:
    """Where the model is: a checkpoint directory or a .gguf file; ModelSourceError otherwise."""
    return locate_model(path, field)


def check_adapter_path(path: str, field: str) -> Path:
    """Where a PEFT adapter is: a directory with adapter_config.json; ModelSourceError otherwise."""
    location = resolve_path(path, field)
    if not (location / "adapter_config.json").is_file():
        raise ModelSourceError(f"{field} {path!r}: {location} has no adapter_config.json")
    return location


def training_data_fields(config: TrainingConfig) -> list[tuple[str, str]]:
    """(field, path) of every data file a training config names."""
    found = []
    for source in task_sources(config.dataset):
        for name in ("path", "validation_path", "test_path"):
            path = getattr(source.spec, name, None)
            if path:
                found.append((f"{source.field}.{name.replace('_path', 'Path')}", path))
    retention = retention_source(config.dataset)
    if retention is not None:
        found.append(("dataset.retention.path", retention.spec.path))
    return found


def fetch_training_sources(config: TrainingConfig, sink: Optional[ProgressSink] = None) -> None:
    """Makes every hf://, s3://, gs://, az:// source of the config local (or checks it in
    place), model first, reporting download progress to `sink`; checks output.uri is free."""
    if is_remote_source(config.model.path):
        fetch_model(config.model.path, "model.path", sink)
    for field, path in training_data_fields(config):
        if is_remote_source(path):
            fetch_data(path, field, sink)
    if config.output.uri:
        objects.check_destination(config.output.uri)


def fetch_evaluation_sources(config: EvalConfig, sink: Optional[ProgressSink] = None) -> None:
    """The same for an evaluation: every model, then every task's rows and few-shot rows."""
    for spec in config.models:
        if is_remote_source(spec.path):
            fetch_model(spec.path, f"models[{spec.name}].path", sink)
    for name, part in config.task_configs():
        if part.dataset is None:  # task lm-eval: lm-eval reads its data (local files, the Hub cache)
            continue
        where = "dataset" if name is None else f"tasks[{name}].dataset"
        paths = [(f"{where}.path", part.dataset.path)]
        if part.dataset.few_shot is not None:
            paths.append((f"{where}.fewShot.path", part.dataset.few_shot.path))
        for field, path in paths:
            if is_remote_source(path):
                fetch_data(path, field, sink)
    if config.contamination.action != ContaminationAction.off and config.lm_eval is None:
        for number, file in enumerate(config.contamination.training_files):
            if is_remote_source(file.path):
                fetch_data(file.path, f"contamination.trainingFiles[{number}].path", sink)


def check_training(config: TrainingConfig, max_rows_to_check: int = MAX_ROWS_TO_CHECK,
                   sink: Optional[ProgressSink] = None) -> CheckReport:
    """Checks what a training run needs, cheapest first; raises the first failure."""
    output = check_output_dir(config.output.path)
    fetch_training_sources(config, sink)
    model = check_model_path(config.model.path)
    rows = check_dataset(config.dataset, max_rows_to_check)
    check_chat_rows(config, max_rows_to_check)  # chat rows: rendered with the model's tokenizer
    return CheckReport(rows, (model,), output)


def check_evaluation(config: EvalConfig, max_rows_to_check: int = MAX_ROWS_TO_CHECK,
                     sink: Optional[ProgressSink] = None, devices: Optional[Callable] = None) -> CheckReport:
    """Checks what an evaluation needs: output, metric names (and BLEU's tokenizer), every model
    and adapter and whether each fits the pod's memory (`devices`: the query of the pod's
    devices, model.placement.visible_devices by default), the rows (and few-shot rows) of every task."""
    output = check_output_dir(config.output.path)
    fetch_evaluation_sources(config, sink)
    for field, task, metrics in config.task_metrics():
        hub_metric_names(task, metrics, field)  # MetricError for a name the task cannot use
    for _, part in config.task_configs():
        if "bleu" in part.metrics:
            bleu_metric(part.bleu.tokenize.value)  # MetricError when its tokenizer is not installed
    models = []
    for spec in config.models:
        models.append(check_model_path(spec.path, f"models[{spec.name}].path"))
        if spec.adapter:
            check_adapter_path(spec.adapter, f"models[{spec.name}].adapter")
    check_evaluation_memory(config, models, devices)  # ConfigError, with the numbers, for a model too big for the pod
    if config.lm_eval is not None:  # lm-eval's tasks resolved, screened and their data loaded (offline)
        from kubetune_trainer.evaluation.lm_eval_tasks import check_lm_eval

        return CheckReport(check_lm_eval(config.lm_eval), tuple(models), output)
    rows = sum(check_eval_dataset(part, max_rows_to_check) for _, part in config.task_configs())
    check_chat_eval(config, max_rows_to_check)  # chat rows: rendered with each model's tokenizer
    return CheckReport(rows, tuple(models), output)
