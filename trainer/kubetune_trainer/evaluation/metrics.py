"""Metrics loaded through the `evaluate` package (the built-in ones are the tasks' own,
kubetune_trainer.evaluation.tasks).

`evaluate.load` runs the metric's script (from the Hub, or a local path): code chosen by
whoever names the metric. So only the names the operator's allowlist holds
(wire.ENV_ALLOWED_EVALUATE_METRICS, empty by default) load that way; any other name that is not
built in is refused. Metric names are resolved before any model loads, so such a name (or an
allowed metric that cannot be fetched) fails the run at once. Light to import: no torch.
"""
from __future__ import annotations

import os

from kubetune_api import wire
from kubetune_api.catalog import BUILTIN_METRICS, hub_metric_names
from kubetune_api.evaluation import EvalConfig
from kubetune_api.errors import MetricError


def allowed_evaluate_metrics() -> frozenset[str]:
    """The metric names the operator allows through `evaluate` (comma-separated in the env)."""
    return frozenset(n.strip() for n in os.environ.get(wire.ENV_ALLOWED_EVALUATE_METRICS, "").split(",") if n.strip())


def load_hub_metric(name: str):
    """An allowed `evaluate` metric; needs the Hugging Face Hub unless it is cached."""
    if name not in allowed_evaluate_metrics():
        raise MetricError(
            f"metric {name!r} is not built in, and loading it through the evaluate package (which runs the metric's "
            f"script) is not allowed here: the cluster's allowlist ({wire.ENV_ALLOWED_EVALUATE_METRICS}) does not "
            f"name it. Built-in metrics: {', '.join(BUILTIN_METRICS)}"
        )
    import evaluate

    try:
        return evaluate.load(name)
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, ... depending on why
        raise MetricError(
            f"metric {name!r} is not built in, and loading it through the evaluate package failed: the Hugging Face "
            f"Hub is unreachable from here (offline) or has no such metric ({type(e).__name__}: {e}). "
            f"Built-in metrics: {', '.join(BUILTIN_METRICS)}"
        ) from e


def resolve_metrics(config: EvalConfig) -> dict:
    """Metric name -> loaded `evaluate` metric, or None for a built-in one."""
    hub = hub_metric_names(config.task, config.metrics)
    return {name: load_hub_metric(name) if name in hub else None for name in config.metrics}


def hub_scores(name: str, metric, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """The numeric results of an `evaluate` metric, keyed `name` or `name.key`. One reference per
    example is passed flat, as most Hub metrics expect."""
    single = all(len(refs) == 1 for refs in references)
    result = metric.compute(predictions=predictions, references=[r[0] for r in references] if single else references)
    return {(key if key == name else f"{name}.{key}"): float(value)
            for key, value in (result or {}).items() if isinstance(value, (int, float))}
