"""Prometheus metrics served on /metrics by the operator.

Fleet gauges are derived from the operator's view of every FineTuneJob and EvalJob, so they
are right after a restart too; the duration histogram counts each job once, when the
operator moves it to a final phase.
"""
from __future__ import annotations

import threading
from typing import Any, Optional

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from kubetune_api import Phase

REGISTRY = CollectorRegistry()

JOBS = Gauge("kubetune_jobs", "kubetune jobs by kind (FineTuneJob, EvalJob) and phase.", ["kind", "phase"], registry=REGISTRY)
DURATION = Histogram(
    "kubetune_job_duration_seconds",
    "Wall time from the pod's start to a final phase.",
    ["kind", "phase"],
    buckets=(30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800),
    registry=REGISTRY,
)
PROGRESS = Gauge("kubetune_finetunejob_progress_ratio", "Fraction of optimizer steps done (0-1).",
                 ["namespace", "name"], registry=REGISTRY)
LOSS = Gauge("kubetune_finetunejob_loss", "Latest loss reported by the trainer.",
             ["namespace", "name", "split"], registry=REGISTRY)
ACCURACY = Gauge("kubetune_finetunejob_token_accuracy", "Next-token accuracy on completion tokens.",
                 ["namespace", "name", "split"], registry=REGISTRY)
THROUGHPUT = Gauge("kubetune_finetunejob_tokens_per_second", "Non-padding tokens per second.",
                   ["namespace", "name"], registry=REGISTRY)
EVAL_PROGRESS = Gauge("kubetune_evaljob_progress_ratio", "Fraction of examples evaluated over all models (0-1).",
                      ["namespace", "name"], registry=REGISTRY)
EVAL_SCORE = Gauge("kubetune_evaljob_score", "Corpus score per model and metric.",
                   ["namespace", "name", "model", "metric"], registry=REGISTRY)

_LOSS_FIELDS = {"train": "trainLoss", "validation": "validationLoss", "test": "testLoss"}
_ACCURACY_FIELDS = {"validation": "validationAccuracy", "test": "testAccuracy"}

_lock = threading.Lock()
_phases: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> phase
_scores: dict[tuple[str, str], set[tuple[str, str]]] = {}  # EvalJob -> its (model, metric) series


def _set_phase(kind: str, namespace: str, name: str, phase: Optional[str]) -> None:
    with _lock:
        if phase is None:
            _phases.pop((kind, namespace, name), None)
        else:
            _phases[(kind, namespace, name)] = phase
        for each in Phase:
            JOBS.labels(kind, each.value).set(sum(1 for (k, _, _), p in _phases.items() if k == kind and p == each.value))


def _set_or_clear(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
    if value is None:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass
    else:
        gauge.labels(*labels).set(float(value))


def observe_finetunejob(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Refreshes every per-job series from a FineTuneJob's status."""
    key = (namespace, name)
    _set_phase("FineTuneJob", namespace, name, status.get("phase") or Phase.Pending.value)
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    percent = progress.get("percent")
    _set_or_clear(PROGRESS, key, None if percent is None else percent / 100.0)
    _set_or_clear(THROUGHPUT, key, progress.get("tokensPerSecond"))
    for split, field in _LOSS_FIELDS.items():
        _set_or_clear(LOSS, (*key, split), metrics.get(field))
    for split, field in _ACCURACY_FIELDS.items():
        _set_or_clear(ACCURACY, (*key, split), metrics.get(field))


def observe_evaljob(namespace: str, name: str, status: dict[str, Any]) -> None:
    """Refreshes every per-job series from an EvalJob's status."""
    key = (namespace, name)
    _set_phase("EvalJob", namespace, name, status.get("phase") or Phase.Pending.value)
    percent = (status.get("progress") or {}).get("percent")
    _set_or_clear(EVAL_PROGRESS, key, None if percent is None else percent / 100.0)
    series = {(r["model"], metric): value for r in status.get("results") or [] for metric, value in (r.get("scores") or {}).items()}
    for model, metric in _scores.get(key, set()) - set(series):
        _set_or_clear(EVAL_SCORE, (*key, model, metric), None)
    for (model, metric), value in series.items():
        _set_or_clear(EVAL_SCORE, (*key, model, metric), value)
    _scores[key] = set(series)


def forget(kind: str, namespace: str, name: str) -> None:
    """Drops every series of a deleted job."""
    key = (namespace, name)
    _set_phase(kind, namespace, name, None)
    if kind == "FineTuneJob":
        series = [(PROGRESS, key), (THROUGHPUT, key)] + [(LOSS, (*key, s)) for s in _LOSS_FIELDS] + \
                 [(ACCURACY, (*key, s)) for s in _ACCURACY_FIELDS]
    else:
        series = [(EVAL_PROGRESS, key)] + [(EVAL_SCORE, (*key, m, k)) for m, k in _scores.pop(key, set())]
    for gauge, labels in series:
        _set_or_clear(gauge, labels, None)


def observe_duration(kind: str, phase: str, seconds: float) -> None:
    DURATION.labels(kind, phase).observe(max(seconds, 0.0))


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
