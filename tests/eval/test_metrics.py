"""Metric names per task, and metrics loaded through the evaluate package (faked: no Hub here)."""
from __future__ import annotations

import pytest

from kubetune_api.errors import ConfigError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation import metrics


def config(task: str, names: list[str]) -> EvalConfig:
    fields = {"generation": {"referenceFields": ["r"]}, "perplexity": {"textField": "t"}}[task]
    return EvalConfig.model_validate({"models": [{"name": "m", "path": "p"}], "task": task, "metrics": names,
                                      "output": {"path": "o"}, "dataset": {"path": "d", "promptTemplate": "x", **fields}})


class FakeMetric:
    def compute(self, predictions, references):
        self.references = references
        return {"meteor": 0.5, "details": "text is dropped", "count": 3}


def test_hub_metrics_are_loaded_up_front_and_scored(monkeypatch):
    fake = FakeMetric()
    monkeypatch.setattr(metrics, "load_hub_metric", lambda name: fake)
    cfg = config("generation", ["exact_match", "meteor"])
    resolved = metrics.resolve_metrics(cfg)
    assert resolved == {"exact_match": None, "meteor": fake}
    scores, _ = metrics.score_generation(cfg, resolved, ["a", "b"], [["a"], ["c"]])
    assert scores == {"exactMatch": 0.5, "meteor": 0.5, "meteor.count": 3.0}
    assert fake.references == ["a", "c"]  # one reference each: passed flat


def test_a_metric_of_another_task_is_refused():
    with pytest.raises(ConfigError, match="'rouge' cannot score task perplexity; use perplexity"):
        metrics.resolve_metrics(config("perplexity", ["rouge"]))
