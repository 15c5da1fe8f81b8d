"""Benchmark suites on the operator's side: preflight checks every task's metrics, the pod's config
carries the suite, and the success message and Prometheus series show the aggregate."""
from __future__ import annotations

import pytest
import yaml
from prometheus_client import generate_latest

from kubetune_api.wire import CONFIG_FILE
from kubetune_operator import builders, metrics, observe, preflight


def _suite_spec(tmp_path, mc_metrics=("accuracy",)) -> dict:
    data = tmp_path / "rows.jsonl"
    data.write_text('{"q": "x", "a": "y", "choices": ["y", "z"], "label": 0}\n')
    return {
        "models": [{"name": "base", "path": "/models/base"}],
        "tasks": [
            {"name": "qa", "dataset": {"path": str(data), "promptTemplate": "{{ q }}", "referenceFields": ["a"],
                                       "fewShot": {"k": 1, "path": str(data)}}, "metrics": ["exact_match"]},
            {"name": "mc", "task": "multiple-choice", "metrics": list(mc_metrics),
             "dataset": {"path": str(data), "promptTemplate": "{{ q }}", "choicesField": "choices", "answerField": "label"}},
        ],
        "output": {"path": "runs/suite"},
    }


def test_preflight_checks_every_suite_tasks_metrics(tmp_path):
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", _suite_spec(tmp_path, ("accuracy", "rouge")), lookup=lambda name: None)
    assert caught.value.reason == "UnknownMetric"
    assert "spec.tasks[mc].metrics: 'rouge' cannot score task multiple-choice" in str(caught.value)


def test_the_pods_config_carries_the_suite_and_its_few_shot_settings(meta, tmp_path):
    _, config = preflight.validate_eval("ev", _suite_spec(tmp_path), lookup=lambda name: None)
    pod_config = yaml.safe_load(builders.config_map(meta, builders.EVAL, config)["data"][CONFIG_FILE])
    assert [t["name"] for t in pod_config["tasks"]] == ["qa", "mc"] and "dataset" not in pod_config
    assert pod_config["tasks"][0]["dataset"]["fewShot"] == {"k": 1, "path": config.tasks[0].dataset.path,
                                                           "seed": 1234, "separator": "\n\n"}


SUITE_RESULTS = [
    {"model": "base", "scores": {"qa/exactMatch": 0.5, "qa/tokenF1": 0.6, "mc/accuracy": 0.25, "mean": 0.375}},
    {"model": "tuned", "scores": {"qa/exactMatch": 0.75, "qa/tokenF1": 0.8, "mc/accuracy": 0.5, "mean": 0.625},
     "delta": {"qa/exactMatch": 0.25, "mc/accuracy": 0.25, "mean": 0.25}},
]


def test_success_message_names_the_tasks_and_each_models_headline_scores():
    assert observe.success_message({"results": SUITE_RESULTS, "suite": [{"name": "qa"}, {"name": "mc"}]}) == (
        "evaluation finished; 2 tasks; base: qa/exactMatch 0.5000, mc/accuracy 0.2500, mean 0.3750; "
        "tuned: qa/exactMatch 0.7500, mc/accuracy 0.5000, mean 0.6250")


def test_suite_scores_are_series_per_task_metric():
    metrics.observe_evaljob("ns", "suite", {"phase": "Succeeded", "results": SUITE_RESULTS})
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'kubetune_evaljob_score{metric="mc/accuracy",model="tuned",name="suite",namespace="ns"} 0.5' in text
    assert 'kubetune_evaljob_score{metric="mean",model="base",name="suite",namespace="ns"} 0.375' in text
    metrics.forget("EvalJob", "ns", "suite")
