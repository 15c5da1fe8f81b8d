"""dataset.conversations in the API: one way to give rows, refused beside the prompt fields,
per mixture task and retention set, and on evaluation datasets (generation only)."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune_api.evaluation import EvalConfig
from kubetune_api.training import DatasetSpec

PROMPT = {"promptTemplate": "{{ q }}", "completionField": "a"}


@pytest.mark.parametrize("extra,fields", [
    ({"promptTemplate": "{{ q }}"}, "dataset.promptTemplate"),
    ({"completionField": "a", "chatTemplate": True}, "dataset.completionField, dataset.chatTemplate"),
])
def test_conversations_refuse_the_prompt_fields_naming_them(extra, fields):
    with pytest.raises(ValidationError, match=f"dataset.conversations renders each row .*: remove {fields}"):
        DatasetSpec.model_validate({"path": "d.jsonl", "conversations": {}, **extra})


def test_a_dataset_gives_rows_one_way():
    spec = DatasetSpec.model_validate({"path": "d.jsonl", "conversations": {"style": "sharegpt"}})
    assert spec.conversations.style.value == "sharegpt" and spec.conversations.field is None
    with pytest.raises(ValidationError, match="dataset needs promptTemplate \\(or conversations, for chat rows\\)"):
        DatasetSpec.model_validate({"path": "d.jsonl", "completionField": "a"})
    with pytest.raises(ValidationError, match="style"):
        DatasetSpec.model_validate({"path": "d.jsonl", "conversations": {"style": "alpaca"}})


def test_mixture_tasks_and_retention_take_conversations_each():
    spec = DatasetSpec.model_validate({"tasks": [{"name": "chat", "path": "c.jsonl", "conversations": {"field": "turns"}},
                                                 {"name": "qa", "path": "q.jsonl", **PROMPT}],
                                       "retention": {"path": "r.jsonl", "conversations": {}}})
    assert spec.tasks[0].conversations.field == "turns" and spec.retention.conversations is not None
    with pytest.raises(ValidationError, match=r"dataset.tasks\[chat\].conversations renders .*: remove dataset.tasks\[chat\].promptTemplate"):
        DatasetSpec.model_validate({"tasks": [{"name": "chat", "path": "c.jsonl", "conversations": {}, "promptTemplate": "x"}]})
    with pytest.raises(ValidationError, match="move dataset.conversations into the tasks"):
        DatasetSpec.model_validate({"conversations": {}, "tasks": [{"name": "qa", "path": "q.jsonl", **PROMPT}]})


def eval_config(dataset: dict, task: str = "generation") -> dict:
    return {"models": [{"name": "m", "path": "/m"}], "task": task, "dataset": {"path": "e.jsonl", **dataset},
            "output": {"path": "/out"}}


def test_evaluation_on_chat_rows_is_generation_with_the_last_assistant_message_as_reference():
    config = EvalConfig.model_validate(eval_config({"conversations": {}}))
    assert config.dataset.reference_fields == [] and config.dataset.prompt_template is None
    with pytest.raises(ValidationError, match="dataset.referenceFields: not with dataset.conversations"):
        EvalConfig.model_validate(eval_config({"conversations": {}, "referenceFields": ["a"]}))
    with pytest.raises(ValidationError, match="dataset.conversations: set but task is multiple-choice"):
        EvalConfig.model_validate(eval_config({"conversations": {}, "choicesField": "c", "answerField": "a"}, "multiple-choice"))
    with pytest.raises(ValidationError, match="dataset needs promptTemplate"):
        EvalConfig.model_validate(eval_config({"referenceFields": ["a"]}))
