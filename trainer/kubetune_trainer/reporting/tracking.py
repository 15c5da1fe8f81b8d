"""Experiment tracking with MLflow (spec.tracking): one run per FineTuneJob, shared by its pods.

The trainer (rank 0) starts the run, or finds it again by its tag (TAG_JOB_UID, the job's uid,
from the operator's KUBETUNE_TRACKING_KEY): a retry or a resume continues the same run. It logs
the resolved config and lineage as params, the loss curve and throughput at every logging step,
the final metrics, and the trained model, summary and model card as artifacts. The evaluator
logs its scores and deltas there, the promotion pod registers the promoted model.

Tracking never fails or holds up the work: the client's retries and timeouts are bounded, and
after the first failure the pod stops tracking and reports why (report.tracking.error), which
the operator shows as the Tracked condition.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from kubetune_api.reports import Lineage, Metrics, PodReport
from kubetune_api.tracking import (ENV_NAMESPACE, ENV_TRACKING_KEY, MAX_TRACKING_MESSAGE, TAG_JOB_UID, TrackingReport,
                                   TrackingSpec)

log = logging.getLogger(__name__)

# The MLflow client's own retries and timeouts (its defaults wait minutes on a server that is down).
CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "15", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5"}
DEFAULT_EXPERIMENT = "kubetune"
MAX_PARAM = 500  # characters of a param's value MLflow keeps everywhere
BATCH = 100  # params per log_batch call (MLflow's limit)
METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-./ ]")
# Per-step metrics, from a progress report (the name in MLflow -> the report's field).
STEP_METRICS = {"train_loss": ("metrics", "train_loss"), "tokens_per_second": ("progress", "tokens_per_second"),
                "epoch": ("progress", "epoch"), "validation_loss": ("metrics", "validation_loss"),
                "validation_accuracy": ("metrics", "validation_accuracy")}


def flatten(values: Any, prefix: str = "") -> dict[str, str]:
    """Nested config -> {"training.learningRate": "0.0002", ...}; lists as JSON; values cut to MAX_PARAM."""
    if isinstance(values, dict):
        out: dict[str, str] = {}
        for key, value in values.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    text = json.dumps(values) if isinstance(values, list) else str(values)
    return {prefix.rstrip("."): text[:MAX_PARAM]} if prefix else {}


def lineage_params(lineage: Optional[Lineage]) -> dict[str, str]:
    """The run's inputs by content: config hash, base model digest, each data file's sha256, versions."""
    if lineage is None:
        return {}
    params = {"lineage.configHash": lineage.config_hash or ""}
    if lineage.model is not None:
        params["lineage.model.digest"] = lineage.model.digest
    for entry in lineage.datasets:
        params[f"lineage.dataset.{entry.role}.sha256"] = entry.sha256
    for model in lineage.models or []:
        params[f"lineage.model.{model.name or model.role}.{model.role}.digest"] = model.digest
    params.update({f"version.{name}": value for name, value in (lineage.versions or {}).items()})
    return {METRIC_KEY.sub("_", key)[:250]: value[:MAX_PARAM] for key, value in params.items() if value}


class Tracker:
    """One pod's link to the job's MLflow run; every call is a no-op once tracking failed."""

    def __init__(self, spec: TrackingSpec, key: Optional[str] = None, experiment: Optional[str] = None):
        for name, value in CLIENT_ENV.items():
            os.environ.setdefault(name, value)
        self.spec, self.uri = spec, spec.mlflow.uri
        self.key = key if key is not None else os.environ.get(ENV_TRACKING_KEY)
        self.experiment = experiment or spec.mlflow.experiment or os.environ.get(ENV_NAMESPACE) or DEFAULT_EXPERIMENT
        self.run_id: Optional[str] = None
        self.experiment_id: Optional[str] = None
        self.error: Optional[str] = None
        self.client = None
        self._logged: dict[str, float] = {}

    @property
    def active(self) -> bool:
        return self.run_id is not None and self.error is None

    def _guard(self, what: str, call: Callable[[], Any]) -> Any:
        """call(), or None after switching tracking off with the failure recorded."""
        if self.error is not None:
            return None
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - any failure of the tracking server: go on without it
            self.error = f"{what}: {type(exc).__name__}: {exc}"[:MAX_TRACKING_MESSAGE]
            log.warning("MLflow tracking at %s switched off: %s", self.uri, self.error)
            return None

    def start(self, create: bool = True) -> "Tracker":
        """Finds the job's run (by its key), else creates it (when `create`)."""
        self._guard("starting the run", lambda: self._start(create))
        return self

    def _start(self, create: bool) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        experiment = self.client.get_experiment_by_name(self.experiment)
        self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.experiment)
        if self.key:
            found = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_JOB_UID}` = '{self.key}'",
                                            max_results=1, order_by=["attributes.start_time ASC"])
            if found:
                self.run_id = found[0].info.run_id
                log.info("MLflow: continuing run %s in experiment %s", self.run_id, self.experiment)
                return
        if not create:
            raise LookupError(f"no run tagged {TAG_JOB_UID}={self.key} in experiment {self.experiment!r}")
        tags = {TAG_JOB_UID: self.key} if self.key else {}
        self.run_id = self.client.create_run(self.experiment_id, tags=tags).info.run_id
        log.info("MLflow: started run %s in experiment %s at %s", self.run_id, self.experiment, self.uri)

    def report(self) -> TrackingReport:
        if self.error is not None:
            return TrackingReport(error=self.error)
        return TrackingReport(run_id=self.run_id, experiment_id=self.experiment_id)

    def log_params(self, params: dict[str, str]) -> None:
        """Params not logged yet (a continued run keeps its first values: MLflow refuses changes)."""
        if self.active:
            self._guard("logging params", lambda: self._log_params(params))

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(key, value) for key, value in params.items() if key not in existing]
        for at in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[at:at + BATCH])

    def log_metrics(self, values: dict[str, Optional[float]], step: int = 0) -> None:
        metrics = {METRIC_KEY.sub("_", key)[:250]: float(v) for key, v in values.items() if isinstance(v, (int, float))}
        if self.active and metrics:
            self._guard("logging metrics", lambda: self._log_metrics(metrics, step))

    def _log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step) for key, value in values.items()])

    def log_artifacts(self, paths: Iterable[Path], under: Optional[str] = None) -> None:
        """Files and directories (each under its own name) as the run's artifacts."""
        if self.active:
            self._guard("logging artifacts", lambda: self._log_artifacts(paths, under))

    def _log_artifacts(self, paths: Iterable[Path], under: Optional[str]) -> None:
        for path in paths:
            path = Path(path)
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), "/".join(p for p in (under, path.name) if p))
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path), under)

    def end(self) -> None:
        """Marks the run FINISHED (the next pod of the job logs to it all the same). MLflow prints
        the run's URL there: to stderr, as stdout is the CLI's result."""
        if self.active:
            with contextlib.redirect_stdout(sys.stderr):
                self._guard("ending the run", lambda: self.client.set_terminated(self.run_id, "FINISHED"))

    def on_progress(self, report: PodReport, log_every: int = 1) -> None:
        """A trainer progress report: its loss and throughput at a logging step, validation
        numbers when new (a validation step's report carries the last window's loss: not logged again)."""
        if not self.active or report.progress is None or report.metrics is None:
            return
        step = report.progress.step
        logging_step = step % log_every == 0 or report.metrics.train_loss != self._logged.get("train_loss")
        values = {}
        for name, (part, field) in STEP_METRICS.items():
            value = getattr(getattr(report, part), field)
            fresh = self._logged.get(name) != value if name.startswith("validation") else logging_step
            if value is not None and fresh:
                values[name] = self._logged[name] = value
        self.log_metrics(values, step)


def start_training(config, lineage: Optional[Lineage]) -> Optional[Tracker]:
    """The trainer's run (rank 0), with the resolved config, lineage and versions as params; None without tracking."""
    if config.tracking is None:
        return None
    tracker = Tracker(config.tracking).start()
    params = flatten(config.model_dump(by_alias=True, mode="json", exclude={"tracking"}))
    tracker.log_params({**params, **lineage_params(lineage)})
    return tracker


def finish_training(tracker: Optional[Tracker], metrics: Metrics, step: int, files: list[Path]) -> Optional[TrackingReport]:
    """Final metrics (test, validation, retention) and, with logModel, the model, summary and card."""
    if tracker is None:
        return None
    final = metrics.model_dump(exclude_none=True, exclude={"tasks"})
    tracker.log_metrics({f"final_{name}": value for name, value in final.items()}, step)
    if tracker.spec.mlflow.log_model:
        tracker.log_artifacts(files)
    tracker.end()
    return tracker.report()


def reporting(report: Callable[[PodReport], None], tracker: Optional[Tracker], log_every: int = 1) -> Callable[[PodReport], None]:
    """The train loop's report callback, which also logs each report's step metrics to the run."""
    if tracker is None:
        return report

    def both(pod_report: PodReport) -> None:
        tracker.on_progress(pod_report, log_every)
        report(pod_report)

    return both


def log_evaluation(config, results, scores_path: Path) -> Optional[TrackingReport]:
    """The evaluator's scores, deltas and delta intervals per model ("eval/<model>/<metric>",
    "eval/<model>/delta/<metric>", deltaLow, deltaHigh) and scores.json, to the job's run."""
    if config.tracking is None:
        return None
    tracker = Tracker(config.tracking).start()
    values: dict[str, Optional[float]] = {}
    for result in results:
        for part, scores in (("", result.scores), ("delta/", result.delta), ("deltaLow/", result.delta_low),
                             ("deltaHigh/", result.delta_high)):
            values.update({f"eval/{result.model}/{part}{metric}": value for metric, value in scores.items()})
    tracker.log_metrics(values)
    tracker.log_artifacts([scores_path], "evaluation")
    tracker.end()
    return tracker.report()


def register_promoted(config, model_dir: Optional[Path]) -> Optional[TrackingReport]:
    """The promoted model logged to the job's run ("promoted/<dir>") and, with registeredModel, a new
    version of that registered model made from it; the version goes into the report."""
    if config.tracking is None:
        return None
    tracker = Tracker(config.tracking).start()
    name, version = config.tracking.mlflow.registered_model, None
    if model_dir is not None and (name or config.tracking.mlflow.log_model):
        tracker.log_artifacts([model_dir], "promoted")
    if name and model_dir is not None and tracker.active:
        version = tracker._guard("registering the model", lambda: _register(tracker, name, f"promoted/{model_dir.name}"))
    tracker.end()
    report = tracker.report()
    return report.model_copy(update={"model_version": str(version)}) if version is not None and report.error is None else report


def _register(tracker: Tracker, name: str, artifact_path: str) -> str:
    from mlflow.exceptions import MlflowException

    client = tracker.client
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(tracker.run_id).info.artifact_uri}/{artifact_path}"
    tags = {TAG_JOB_UID: tracker.key} if tracker.key else None
    return client.create_model_version(name, source, run_id=tracker.run_id, tags=tags).version
