"""Metrics loaded through the `evaluate` package (the built-in ones are the tasks' own,
kubetune_trainer.evaluation.tasks).

Metric names are resolved before any model loads, so an unknown name (or a Hub metric that
cannot be fetched) fails the run at once. Light to import: no torch.
"""
from __future__ import annotations

from kubetune_api.catalog import BUILTIN_METRICS, hub_metric_names
from kubetune_api.evaluation import EvalConfig
from kubetune_api.errors import MetricError


def load_hub_metric(name: str):
    """An `evaluate` metric; needs the Hugging Face Hub unless it is cached."""
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
