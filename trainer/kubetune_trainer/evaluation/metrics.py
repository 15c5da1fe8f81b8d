"""Which metrics a task accepts, and scoring generated text with them.

Metric names are resolved before any model loads, so an unknown name (or a Hub metric that
cannot be fetched) fails the run at once. Light to import: no torch.
"""
from __future__ import annotations

from kubetune_api.catalog import BUILTIN_METRICS, hub_metric_names
from kubetune_api.evaluation import EvalConfig
from kubetune_api.errors import MetricError
from kubetune_trainer.evaluation import textmetrics
from kubetune_trainer.evaluation.rouge import rouge

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


def _hub_scores(name: str, metric, predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    single = all(len(refs) == 1 for refs in references)
    result = metric.compute(predictions=predictions, references=[r[0] for r in references] if single else references)
    return {(key if key == name else f"{name}.{key}"): float(value)
            for key, value in (result or {}).items() if isinstance(value, (int, float))}


def score_generation(config: EvalConfig, metrics: dict, predictions: list[str],
                     references: list[list[str]]) -> tuple[dict[str, float], dict[str, str]]:
    """(scores, signatures) of predictions against their references."""
    scores, signatures = {}, {}
    for name, hub_metric in metrics.items():
        if name == "rouge":
            spec = config.rouge
            values, signatures["rouge"] = rouge(predictions, references, spec.use_stemmer, spec.confidence_interval,
                                                spec.bootstrap_samples, config.generation.seed)
            scores.update(values)
        elif name == "bleu":
            scores["bleu"], signatures["bleu"] = textmetrics.bleu(predictions, references)
        elif name == "exact_match":
            scores["exactMatch"] = textmetrics.exact_match(predictions, references, config.exact_match)
        elif name == "token_f1":
            scores["tokenF1"] = textmetrics.token_f1(predictions, references, config.exact_match)
        else:
            scores.update(_hub_scores(name, hub_metric, predictions, references))
    return scores, signatures
