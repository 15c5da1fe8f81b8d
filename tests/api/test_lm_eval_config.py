"""spec.lmEval (task lm-eval): what the schema and validators accept and refuse, naming the field,
for an EvalJob and a FineTuneJob's evaluation block (whose EvalJob and promotion gates read
'<task>/<metric>' scores)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune_api.catalog import EvalTask, hub_metric_names
from kubetune_api.evaluation import EvalConfig
from kubetune_api.resources import FineTuneEvaluation

MODELS = [{"name": "base", "path": "/models/base"}]
LM_EVAL = {"tasks": ["arc_easy", "super-glue-lm-eval-v1"], "numFewshot": 5, "limit": 100, "includePath": ["tasks"]}


def evaljob(**fields) -> EvalConfig:
    return EvalConfig.model_validate({"models": MODELS, "output": {"path": "out"}, "task": "lm-eval", "lmEval": LM_EVAL, **fields})


def test_lm_eval_needs_no_dataset_and_no_metrics():
    config = evaljob()
    assert config.dataset is None and config.lm_eval.tasks == LM_EVAL["tasks"] and config.lm_eval.batch_size == 1
    assert config.task_metrics() == []  # nothing for the metric allowlist: lm-eval's tasks name theirs
    assert hub_metric_names(EvalTask.lm_eval, ["rouge"]) == []


@pytest.mark.parametrize("fields, message", [
    ({"lmEval": None}, "lmEval is required for task lm-eval"),
    ({"dataset": {"path": "x.jsonl", "promptTemplate": "{{a}}", "referenceFields": ["a"]}}, "dataset: task lm-eval reads"),
    ({"metrics": ["rouge"]}, "metrics: task lm-eval reports the metrics"),
    ({"contamination": {"action": "refuse"}}, "contamination.action: refuse cannot be checked for task lm-eval"),
    ({"lmEval": {**LM_EVAL, "tasks": ["../etc/passwd"]}}, "lmEval.tasks.0"),
    ({"lmEval": {**LM_EVAL, "tasks": ["a b"]}}, "lmEval.tasks.0"),
    ({"lmEval": {**LM_EVAL, "tasks": ["mmlu", "mmlu"]}}, "lmEval.tasks: names must be unique"),
    ({"lmEval": {**LM_EVAL, "tasks": []}}, "lmEval.tasks"),
    ({"lmEval": {**LM_EVAL, "tasks": [f"t{i}" for i in range(65)]}}, "lmEval.tasks"),
    ({"lmEval": {**LM_EVAL, "includePath": ["../outside"]}}, "lmEval.includePath: '../outside' leaves the working directory"),
    ({"lmEval": {**LM_EVAL, "includePath": ["s3://bucket/tasks"]}}, "lmEval.includePath: 's3://bucket/tasks' must be a local directory"),
    ({"lmEval": {**LM_EVAL, "limit": 0}}, "lmEval.limit"),
    ({"lmEval": {**LM_EVAL, "numFewshot": 65}}, "lmEval.numFewshot"),
    ({"task": "generation", "dataset": {"path": "x.jsonl", "promptTemplate": "{{a}}", "referenceFields": ["a"]}},
     "lmEval: set but task is generation"),
])
def test_refused_naming_the_field(fields, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(".", r"\.")):
        evaljob(**fields)


def test_not_a_suite_entry():
    with pytest.raises(ValidationError, match=r"tasks\[bench\]\.task: lm-eval is a top-level task"):
        EvalConfig.model_validate({"models": MODELS, "output": {"path": "out"}, "tasks": [
            {"name": "bench", "task": "lm-eval", "dataset": {"path": "x.jsonl", "promptTemplate": "{{a}}"}}]})


def test_finetune_evaluation_block_takes_lm_eval():
    block = FineTuneEvaluation.model_validate({"task": "lm-eval", "lmEval": LM_EVAL})
    assert block.dataset is None and block.lm_eval.num_fewshot == 5
    with pytest.raises(ValidationError, match="dataset is required for task generation"):
        FineTuneEvaluation.model_validate({})
    with pytest.raises(ValidationError, match="lmEval is required for task lm-eval"):
        FineTuneEvaluation.model_validate({"task": "lm-eval"})
