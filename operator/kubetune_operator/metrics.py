"""Prometheus metrics served on /metrics by the operator.

Fleet gauges are derived from the operator's view of every FineTuneJob and EvalJob, so they
are right after a restart too; the duration histogram, the failure and GPU-seconds counters
count each job once, when the operator moves it to a final phase. Per-job series carry only
`namespace` and `name` (plus a small fixed label such as split or metric) and are removed
when the job is deleted.

monitoring/ builds the Grafana dashboard and the PrometheusRules from these names; a test
runs every query of both against a real Prometheus scraping this module.
"""
from __future__ import annotations

import functools
import importlib.metadata
import platform
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubetune_api import Phase, Reason
from kubetune_operator.attempts import INFRA_POD_REASONS
from kubetune_operator.observe import STUCK_WAITING

REGISTRY = CollectorRegistry()
KINDS = ("FineTuneJob", "EvalJob")
FINAL_PHASES = (Phase.Succeeded.value, Phase.Failed.value)
HANDLERS = ("launch", "sync", "mirror", "promote")

JOBS = Gauge("kubetune_jobs", "kubetune jobs by kind (FineTuneJob, EvalJob) and phase.", ["kind", "phase"], registry=REGISTRY)
JOB_PHASE = Gauge("kubetune_job_phase", "1 for each job, labelled with its current phase (one series per job).",
                  ["kind", "namespace", "name", "phase"], registry=REGISTRY)
DURATION = Histogram(
    "kubetune_job_duration_seconds",
    "Wall time from the pod's start to a final phase.",
    ["kind", "phase"],
    buckets=(30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800),
    registry=REGISTRY,
)
FAILURES = Counter("kubetune_job_failures", "Jobs that turned Failed, by the reason of their Succeeded condition.",
                   ["kind", "namespace", "reason"], registry=REGISTRY)
GPU_SECONDS = Counter("kubetune_gpu_seconds", "GPUs requested x seconds from the pod's start to a final phase.",
                      ["namespace", "kind"], registry=REGISTRY)
POD_SECONDS = Counter("kubetune_pod_seconds", "Running seconds of every pod of finished jobs (status.usage.podSeconds).",
                      ["namespace", "kind"], registry=REGISTRY)
ESTIMATED_COST = Counter("kubetune_estimated_cost", "Estimated cost of finished jobs: GPU-hours x the operator's price "
                         "(status.usage.estimatedCost); only with --gpu-hour-price.", ["namespace", "kind", "currency"], registry=REGISTRY)
PROMOTIONS = Counter("kubetune_promotions", "FineTuneJob promotions by outcome: promoted, gate_failed, failed.",
                     ["namespace", "outcome"], registry=REGISTRY)
PROMOTION_OUTCOMES = ("promoted", "gate_failed", "failed")
RECONCILE = Histogram(
    "kubetune_reconcile_duration_seconds",
    "Time one operator handler run took (launch: validate and create children; sync: read Job and pods, "
    "patch status; mirror: copy evaluation scores into the FineTuneJob).",
    ["kind", "handler"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter("kubetune_reconcile_errors", "Operator handler runs that raised (kopf retries them).",
                           ["kind", "handler"], registry=REGISTRY)
BUILD_INFO = Gauge("kubetune_build_info", "Always 1; the labels say which operator build is running.",
                   ["version", "python", "kopf"], registry=REGISTRY)
PROGRESS = Gauge("kubetune_finetunejob_progress_ratio", "Fraction of optimizer steps done (0-1).",
                 ["namespace", "name"], registry=REGISTRY)
ETA = Gauge("kubetune_finetunejob_eta_seconds", "Trainer's estimate of the seconds left to the end of training.",
            ["namespace", "name"], registry=REGISTRY)
LOSS = Gauge("kubetune_finetunejob_loss", "Latest loss reported by the trainer.",
             ["namespace", "name", "split"], registry=REGISTRY)
ACCURACY = Gauge("kubetune_finetunejob_token_accuracy", "Next-token accuracy on completion tokens.",
                 ["namespace", "name", "split"], registry=REGISTRY)
THROUGHPUT = Gauge("kubetune_finetunejob_tokens_per_second", "Non-padding tokens per second.",
                   ["namespace", "name"], registry=REGISTRY)
EVAL_DELTA = Gauge("kubetune_finetunejob_evaluation_delta",
                   "Tuned minus base score per metric, from the FineTuneJob's evaluation block (status.evaluation.delta).",
                   ["namespace", "name", "metric"], registry=REGISTRY)
FORGETTING = Gauge("kubetune_finetunejob_forgetting",
                   "Tuned minus base on the retention data per metric (status.evaluation.forgetting; perplexity up = forgetting).",
                   ["namespace", "name", "metric"], registry=REGISTRY)
EVAL_PROGRESS = Gauge("kubetune_evaljob_progress_ratio", "Fraction of examples evaluated over all models (0-1).",
                      ["namespace", "name"], registry=REGISTRY)
EVAL_SCORE = Gauge("kubetune_evaljob_score", "Corpus score per model and metric (status.results; a suite's metrics are <task>/<metric> and mean, no extra label).",
                   ["namespace", "name", "model", "metric"], registry=REGISTRY)

_LOSS_FIELDS = {"train": "trainLoss", "validation": "validationLoss", "test": "testLoss"}
_ACCURACY_FIELDS = {"validation": "validationAccuracy", "test": "testAccuracy"}

# Per-job series of scores (EvalJob) and of deltas and forgetting (FineTuneJob) are capped: the
# status allows hundreds of score keys per model, Prometheus should not hold them all. Beyond
# the cap a job's series are dropped (the handlers say so in an event); status keeps them all.
MAX_SERIES_PER_JOB = 64
# Failure reasons as label values: the API's reasons and the kubelet's pod reasons; any other
# string (a pod may write its own) counts as Other.
OTHER_REASON = "Other"
_KNOWN_REASONS = frozenset(r.value for r in Reason) | INFRA_POD_REASONS | STUCK_WAITING | {"BackoffLimitExceeded"}

_lock = threading.Lock()
_phases: dict[tuple[str, str, str], str] = {}  # (kind, namespace, name) -> phase
_scores: dict[tuple[str, str], set[tuple[str, str]]] = {}  # EvalJob -> its (model, metric) series
_evaluation: dict[tuple[str, str], set[tuple[Gauge, str]]] = {}  # FineTuneJob -> its (gauge, metric) series
_dropped: dict[tuple[str, str, str], int] = {}  # (kind, namespace, name) -> series left out
_currency: Optional[str] = None  # of ESTIMATED_COST; None: no GPU-hour price set


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


BUILD_INFO.labels(_version("kubetune"), platform.python_version(), _version("kopf")).set(1)
# Series that exist from the start read 0 before their first event, so rate() and increase()
# see that event (a counter series born at 1 shows no increase).
for _kind in KINDS:
    for _phase in FINAL_PHASES:
        DURATION.labels(_kind, _phase)
    for _handler in HANDLERS:
        RECONCILE_ERRORS.labels(_kind, _handler)


def _set_phase(kind: str, namespace: str, name: str, phase: Optional[str]) -> None:
    with _lock:
        key = (kind, namespace, name)
        previous = _phases.pop(key, None)
        if phase is not None:
            _phases[key] = phase
        if previous is not None and previous != phase:
            _remove(JOB_PHASE, (kind, namespace, name, previous))
        if phase is not None:
            JOB_PHASE.labels(kind, namespace, name, phase).set(1)
            # Usage is counted at the end; the namespace's series start at 0 now.
            GPU_SECONDS.labels(namespace, kind)
            POD_SECONDS.labels(namespace, kind)
            if _currency:
                ESTIMATED_COST.labels(namespace, kind, _currency)
            if kind == "FineTuneJob":
                for outcome in PROMOTION_OUTCOMES:
                    PROMOTIONS.labels(namespace, outcome)
        for each in Phase:
            JOBS.labels(kind, each.value).set(sum(1 for (k, _, _), p in _phases.items() if k == kind and p == each.value))


def _remove(gauge: Gauge, labels: tuple[str, ...]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def _set_or_clear(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
    if value is None:
        _remove(gauge, labels)
    else:
        gauge.labels(*labels).set(float(value))


def _capped(series: dict[Any, Any]) -> dict[Any, Any]:
    return dict(list(series.items())[:MAX_SERIES_PER_JOB])


def _note_dropped(kind: str, key: tuple[str, str], total: int) -> int:
    """How many series the cap left out of a job's, when that number just changed (else 0)."""
    dropped = max(total - MAX_SERIES_PER_JOB, 0)
    with _lock:
        if _dropped.get((kind, *key), 0) == dropped:
            return 0
        _dropped[(kind, *key)] = dropped
    return dropped


def reason_label(reason: str) -> str:
    return reason if reason in _KNOWN_REASONS else OTHER_REASON


def observe_finetunejob(namespace: str, name: str, status: dict[str, Any]) -> int:
    """Refreshes every per-job series from a FineTuneJob's status; returns how many series the
    cap newly left out (0 when that did not change)."""
    key = (namespace, name)
    _set_phase("FineTuneJob", namespace, name, status.get("phase") or Phase.Pending.value)
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    percent = progress.get("percent")
    _set_or_clear(PROGRESS, key, None if percent is None else percent / 100.0)
    _set_or_clear(ETA, key, progress.get("etaSeconds"))
    _set_or_clear(THROUGHPUT, key, progress.get("tokensPerSecond"))
    for split, field in _LOSS_FIELDS.items():
        _set_or_clear(LOSS, (*key, split), metrics.get(field))
    for split, field in _ACCURACY_FIELDS.items():
        _set_or_clear(ACCURACY, (*key, split), metrics.get(field))
    evaluation = status.get("evaluation") or {}
    series = {(gauge, metric): value for gauge, field in ((EVAL_DELTA, "delta"), (FORGETTING, "forgetting"))
              for metric, value in (evaluation.get(field) or {}).items()}
    dropped = _note_dropped("FineTuneJob", key, len(series))
    series = _capped(series)
    with _lock:
        for gauge, metric in _evaluation.get(key, set()) - set(series):
            _remove(gauge, (*key, metric))
        for (gauge, metric), value in series.items():
            _set_or_clear(gauge, (*key, metric), value)
        _evaluation[key] = set(series)
    return dropped


def observe_evaljob(namespace: str, name: str, status: dict[str, Any]) -> int:
    """Refreshes every per-job series from an EvalJob's status; returns, as observe_finetunejob,
    how many series the cap newly left out."""
    key = (namespace, name)
    _set_phase("EvalJob", namespace, name, status.get("phase") or Phase.Pending.value)
    percent = (status.get("progress") or {}).get("percent")
    _set_or_clear(EVAL_PROGRESS, key, None if percent is None else percent / 100.0)
    series = {(r["model"], metric): value for r in status.get("results") or [] for metric, value in (r.get("scores") or {}).items()}
    dropped = _note_dropped("EvalJob", key, len(series))
    series = _capped(series)
    with _lock:
        for model, metric in _scores.get(key, set()) - set(series):
            _remove(EVAL_SCORE, (*key, model, metric))
        for (model, metric), value in series.items():
            _set_or_clear(EVAL_SCORE, (*key, model, metric), value)
        _scores[key] = set(series)
    return dropped


def forget(kind: str, namespace: str, name: str) -> None:
    """Drops every series of a deleted job (the fleet counters keep what it added)."""
    key = (namespace, name)
    _set_phase(kind, namespace, name, None)
    with _lock:
        _dropped.pop((kind, *key), None)
        if kind == "FineTuneJob":
            series = [(PROGRESS, key), (ETA, key), (THROUGHPUT, key)] + [(LOSS, (*key, s)) for s in _LOSS_FIELDS] + \
                     [(ACCURACY, (*key, s)) for s in _ACCURACY_FIELDS] + \
                     [(gauge, (*key, metric)) for gauge, metric in _evaluation.pop(key, set())]
        else:
            series = [(EVAL_PROGRESS, key)] + [(EVAL_SCORE, (*key, m, k)) for m, k in _scores.pop(key, set())]
        for gauge, labels in series:
            _remove(gauge, labels)


def observe_duration(kind: str, phase: str, seconds: float) -> None:
    DURATION.labels(kind, phase).observe(max(seconds, 0.0))


def set_currency(currency: Optional[str]) -> None:
    """The currency of the operator's GPU-hour price; None: no price, no cost series."""
    global _currency
    _currency = currency


def observe_final(kind: str, namespace: str, phase: str, reason: str, seconds: Optional[float],
                  usage: Optional[dict[str, Any]] = None) -> None:
    """Counts a job that reached a final phase: once per job, from the operator's one
    transition spot (a pod-run job with its run time and status.usage, every attempt
    included, or a job refused before any pod, which used nothing)."""
    if seconds is not None:
        observe_duration(kind, phase, seconds)
    if usage is not None:
        GPU_SECONDS.labels(namespace, kind).inc(usage.get("gpuSeconds", 0.0))
        POD_SECONDS.labels(namespace, kind).inc(usage.get("podSeconds", 0.0))
        if usage.get("estimatedCost") is not None:
            ESTIMATED_COST.labels(namespace, kind, usage["currency"]).inc(usage["estimatedCost"])
    if phase == Phase.Failed.value:
        FAILURES.labels(kind, namespace, reason_label(reason)).inc()


def observe_promotion(namespace: str, outcome: str) -> None:
    PROMOTIONS.labels(namespace, outcome).inc()


def _expected(error: BaseException) -> bool:
    """A retry that is part of the plan, not a failure: an EvalJob waiting for its
    FineTuneJob raises kopf.TemporaryError from preflight.NotReady."""
    from kubetune_operator.preflight import NotReady
    return isinstance(error, NotReady) or isinstance(error.__context__, NotReady)


@contextmanager
def reconcile(kind: str, handler: str) -> Iterator[None]:
    """Times one handler run and counts it as an error when it raises."""
    start = time.perf_counter()
    try:
        yield
    except Exception as error:
        if not _expected(error):
            RECONCILE_ERRORS.labels(kind, handler).inc()
        raise
    finally:
        RECONCILE.labels(kind, handler).observe(time.perf_counter() - start)


def timed(handler: str, kind: Optional[str] = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of `reconcile`; without `kind`, the first argument is the Workload."""
    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with reconcile(kind or args[0].kind, handler):
                return function(*args, **kwargs)
        return run
    return wrap


_serving: set[tuple[str, int]] = set()


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serves /metrics, once per process: kopf's startup runs again when main restarts kopf."""
    if (address, port) not in _serving:
        start_http_server(port, addr=address, registry=REGISTRY)
        _serving.add((address, port))
