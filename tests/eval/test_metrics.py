"""Metric names per task, the task registry, and metrics loaded through the evaluate package
(faked: no Hub here)."""
from __future__ import annotations

import sys
import types

import pytest

from kubetune_api import catalog, wire
from kubetune_api.errors import ConfigError, MetricError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation import metrics
from kubetune_trainer.evaluation.tasks import TASKS, task_for
from kubetune_trainer.evaluation.tasks.generation import Generation


def config(task: str, names: list[str]) -> EvalConfig:
    fields = {"generation": {"referenceFields": ["r"]}, "perplexity": {"textField": "t"}}[task]
    return EvalConfig.model_validate({"models": [{"name": "m", "path": "p"}], "task": task, "metrics": names,
                                      "output": {"path": "o"}, "dataset": {"path": "d", "promptTemplate": "x", **fields}})


class FakeMetric:
    def compute(self, predictions, references):
        self.references = references
        return {"meteor": 0.5, "details": "text is dropped", "count": 3}


def test_every_catalog_task_is_registered_and_scores_its_builtin_metrics():
    # lm-eval runs lm-evaluation-harness's own evaluator (evaluation.lm_eval_run), not a registered Task.
    assert set(TASKS) == set(catalog.TASKS) - {catalog.EvalTask.lm_eval}
    assert all(TASKS[kind].kind is kind for kind in TASKS)
    # Generation scores each built-in metric with a method named after it (no second list of names).
    assert all(callable(getattr(Generation, f"_{name}", None)) for name in Generation.builtin_metrics())


def test_hub_metrics_are_loaded_up_front_and_scored(monkeypatch):
    fake = FakeMetric()
    monkeypatch.setattr(metrics, "load_hub_metric", lambda name: fake)
    cfg = config("generation", ["exact_match", "meteor"])
    resolved = metrics.resolve_metrics(cfg)
    assert resolved == {"exact_match": None, "meteor": fake}
    records = [{"prediction": "a", "references": ["a"]}, {"prediction": "b", "references": ["c"]}]
    scores, _ = task_for(cfg).scores(records, resolved)
    assert scores == {"exactMatch": 0.5, "meteor": 0.5, "meteor.count": 3.0}
    assert fake.references == ["a", "c"]  # one reference each: passed flat


def test_builtin_generation_metrics_and_signatures():
    cfg = config("generation", ["rouge", "bleu", "exact_match", "token_f1"])
    records = [{"prediction": "the cat sat", "references": ["the cat sat"]}]
    scores, signatures = task_for(cfg).scores(records, metrics.resolve_metrics(cfg))
    assert scores["exactMatch"] == scores["tokenF1"] == scores["rouge1"] == 1.0 and "bleu" in scores
    assert set(signatures) == {"rouge", "bleu"}


def test_headline_leaves_detail_to_scores_json():
    scores = {"rouge1": 0.5, "rouge1Precision": 0.4, "rouge1Low": 0.3, "perplexity": 3.0, "nll": 1.1, "tokens": 9.0}
    assert task_for(config("generation", ["rouge"])).headline(scores) == {"rouge1": 0.5, "perplexity": 3.0,
                                                                          "nll": 1.1, "tokens": 9.0}
    assert task_for(config("perplexity", ["perplexity"])).headline(scores) == {"rouge1": 0.5, "perplexity": 3.0}


def test_a_metric_of_another_task_is_refused():
    with pytest.raises(ConfigError, match="'rouge' cannot score task perplexity; use perplexity"):
        metrics.resolve_metrics(config("perplexity", ["rouge"]))


@pytest.fixture
def fake_evaluate(monkeypatch):
    """The evaluate package, recording which metrics it was asked to load (and run)."""
    loaded = []
    module = types.ModuleType("evaluate")
    module.load = lambda name: loaded.append(name) or FakeMetric()
    monkeypatch.setitem(sys.modules, "evaluate", module)
    return loaded


def test_a_metric_not_built_in_is_refused_unless_allowed(monkeypatch, fake_evaluate):
    monkeypatch.delenv(wire.ENV_ALLOWED_EVALUATE_METRICS, raising=False)
    with pytest.raises(MetricError) as refused:
        metrics.resolve_metrics(config("generation", ["rouge", "meteor"]))
    assert refused.value.reason == "UnknownMetric"
    assert "metric 'meteor' is not built in" in str(refused.value) and wire.ENV_ALLOWED_EVALUATE_METRICS in str(refused.value)
    assert fake_evaluate == []  # its script never ran


def test_an_allowed_metric_loads_through_evaluate_and_others_stay_refused(monkeypatch, fake_evaluate):
    monkeypatch.setenv(wire.ENV_ALLOWED_EVALUATE_METRICS, "meteor, bertscore")
    resolved = metrics.resolve_metrics(config("generation", ["rouge", "meteor"]))
    assert resolved["rouge"] is None and isinstance(resolved["meteor"], FakeMetric) and fake_evaluate == ["meteor"]
    with pytest.raises(MetricError, match="metric './my_metric.py' is not built in"):
        metrics.resolve_metrics(config("generation", ["./my_metric.py"]))
    assert fake_evaluate == ["meteor"]


def test_an_allowed_metric_that_cannot_load_names_the_hub(monkeypatch):
    def offline(name):
        raise FileNotFoundError(f"Couldn't find a module script at {name}")

    monkeypatch.setitem(sys.modules, "evaluate", types.SimpleNamespace(load=offline))
    monkeypatch.setenv(wire.ENV_ALLOWED_EVALUATE_METRICS, "meteor")
    with pytest.raises(MetricError, match="the Hugging Face Hub is unreachable from here"):
        metrics.resolve_metrics(config("generation", ["meteor"]))
