"""Prometheus metrics served on /metrics by the operator.

Fleet gauges are derived from the operator's view of every FineTuneJob, so they are right
after a restart too; the duration histogram counts each job once, when the operator
moves it to a final phase.
"""
from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from kubetune_operator.api import Phase

REGISTRY = CollectorRegistry()

JOBS = Gauge("kubetune_finetunejobs", "FineTuneJobs by phase.", ["phase"], registry=REGISTRY)
DURATION = Histogram(
    "kubetune_finetunejob_duration_seconds",
    "Wall time from the trainer's start to a final phase.",
    ["phase"],
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

_LOSS_FIELDS = {"train": "trainLoss", "validation": "validationLoss", "test": "testLoss"}
_ACCURACY_FIELDS = {"validation": "validationAccuracy", "test": "testAccuracy"}

_lock = threading.Lock()
_phases: dict[tuple[str, str], str] = {}


def _recount_phases() -> None:
    for phase in Phase:
        JOBS.labels(phase.value).set(sum(1 for p in _phases.values() if p == phase.value))


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
    with _lock:
        _phases[key] = status.get("phase") or Phase.Pending.value
        _recount_phases()
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    percent = progress.get("percent")
    _set_or_clear(PROGRESS, key, None if percent is None else percent / 100.0)
    _set_or_clear(THROUGHPUT, key, progress.get("tokensPerSecond"))
    for split, field in _LOSS_FIELDS.items():
        _set_or_clear(LOSS, (*key, split), metrics.get(field))
    for split, field in _ACCURACY_FIELDS.items():
        _set_or_clear(ACCURACY, (*key, split), metrics.get(field))


def forget_finetunejob(namespace: str, name: str) -> None:
    key = (namespace, name)
    with _lock:
        _phases.pop(key, None)
        _recount_phases()
    for gauge, splits in ((PROGRESS, [()]), (THROUGHPUT, [()]),
                          (LOSS, [(s,) for s in _LOSS_FIELDS]), (ACCURACY, [(s,) for s in _ACCURACY_FIELDS])):
        for split in splits:
            _set_or_clear(gauge, (*key, *split), None)


def observe_duration(phase: str, seconds: float) -> None:
    DURATION.labels(phase).observe(max(seconds, 0.0))


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
