"""Benchmark suites (tasks) and few-shot settings in EvalConfig and the EvalJob spec: what the models refuse."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune_api import EvalJobSpec
from kubetune_api.evaluation import EvalConfig

QA = {"path": "qa.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}
MC = {"path": "mc.jsonl", "promptTemplate": "{{ q }}", "choicesField": "choices", "answerField": "label"}


def spec(**fields) -> dict:
    return {"models": [{"name": "base", "path": "/m"}], "output": {"path": "out"}, **fields}


def suite(*tasks) -> dict:
    return spec(tasks=list(tasks))


def test_a_suite_splits_into_one_config_per_task_with_its_own_or_the_shared_settings():
    config = EvalConfig.model_validate({**suite(
        {"name": "qa", "dataset": {**QA, "fewShot": {"k": 5, "path": "dev.jsonl"}}, "metrics": ["exact_match"]},
        {"name": "mc", "task": "multiple-choice", "dataset": MC, "metrics": ["accuracy"], "generation": {"batchSize": 2}}),
        "generation": {"batchSize": 16}})
    (qa_name, qa), (mc_name, mc) = config.task_configs()
    assert (qa_name, qa.task.value, qa.metrics, qa.generation.batch_size) == ("qa", "generation", ["exact_match"], 16)
    assert (mc_name, mc.task.value, mc.metrics, mc.generation.batch_size) == ("mc", "multiple-choice", ["accuracy"], 2)
    few_shot = qa.dataset.few_shot
    assert (few_shot.k, few_shot.path, few_shot.seed, few_shot.separator) == (5, "dev.jsonl", 1234, "\n\n")
    assert qa.tasks is None and qa.models == config.models
    assert config.task_metrics() == [("tasks[qa].metrics", qa.task, ["exact_match"]), ("tasks[mc].metrics", mc.task, ["accuracy"])]
    single = EvalConfig.model_validate(spec(dataset=QA))
    assert single.task_configs() == [(None, single)] and single.task_metrics()[0][0] == "metrics"


@pytest.mark.parametrize("fields, message", [
    (spec(), "set exactly one of dataset (one task) and tasks (a suite)"),
    (spec(dataset=QA, tasks=[{"name": "qa", "dataset": QA}]), "set exactly one of dataset"),
    (suite({"name": "qa", "dataset": QA}, {"name": "qa", "dataset": QA}), "tasks[].name must be unique"),
    ({**suite({"name": "qa", "dataset": QA}), "metrics": ["bleu"]}, "with tasks, set them in each tasks[] entry"),
    ({**suite({"name": "qa", "dataset": QA}), "task": "perplexity"}, "with tasks, set them in each tasks[] entry"),
    (suite({"name": "mc", "task": "multiple-choice", "dataset": QA}), "dataset.choicesField is required for task multiple-choice"),
    (suite({"name": "my-task", "dataset": QA}), "String should match pattern"),
    (suite(*[{"name": f"t{i}", "dataset": QA} for i in range(33)]), "at most 32 items"),
    (spec(task="perplexity", metrics=["perplexity"], dataset={"path": "t.jsonl", "promptTemplate": "{{ q }}", "textField": "a", "fewShot": {"k": 1, "path": "d"}}),
     "dataset.fewShot needs a prompt with an answer"),
    (suite({"name": "lm", "task": "perplexity", "metrics": ["perplexity"],
            "dataset": {"path": "t.jsonl", "promptTemplate": "{{ q }}", "textField": "a", "fewShot": {"k": 1, "path": "d"}}}), "dataset.fewShot needs a prompt"),
    (spec(dataset={**QA, "fewShot": {"k": 0, "path": "d"}}), "greater than or equal to 1"),
    (spec(dataset={**QA, "fewShot": {"k": 33, "path": "d"}}), "less than or equal to 32"),
    (spec(dataset={**QA, "fewShot": {"k": 2}}), "fewShot.path"),
])
def test_refused(fields, message):
    with pytest.raises(ValidationError) as error:
        EvalConfig.model_validate(fields)
    assert message in str(error.value), str(error.value)


def test_the_evaljob_spec_takes_a_suite_with_the_api_servers_defaults_filled_in():
    # The API server fills spec.task and spec.metrics with their defaults; a suite still validates.
    parsed = EvalJobSpec.model_validate({**suite({"name": "qa", "dataset": QA}), "task": "generation",
                                         "metrics": ["rouge", "bleu", "exact_match"]})
    assert [t.name for t in parsed.tasks] == ["qa"] and parsed.dataset is None
