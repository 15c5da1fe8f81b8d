"""Items from rows, and the preflight check's errors naming file, line and field (no torch)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from kubetune_api.errors import DataError
from kubetune_api.evaluation import EvalConfig
from kubetune_trainer.evaluation.dataset import check_eval_dataset, load_items
from tinymodels import TEMPLATE, write_jsonl


def config(path, task="generation", **dataset) -> EvalConfig:
    fields = {"generation": {"referenceFields": ["answer"]}, "multiple-choice": {"choicesField": "choices", "answerField": "label"},
              "perplexity": {"textField": "answer"}}[task]
    return EvalConfig.model_validate({
        "models": [{"name": "m", "path": "unused"}], "task": task, "metrics": ["accuracy"] if task == "multiple-choice" else
        (["perplexity"] if task == "perplexity" else ["rouge"]), "output": {"path": "out"},
        "dataset": {"path": str(path), "promptTemplate": TEMPLATE, **fields, **dataset}})


def test_items_for_each_task(eval_file):
    items, rows = load_items(config(eval_file, referenceFields=["answer", "animal"], maxExamples=5))
    assert rows == 12 and len(items) == 5
    assert items[0].prompt == "Which animal is red cat?\nAnswer:" and items[0].references == [" cat", "cat"]
    choice = load_items(config(eval_file, "multiple-choice"))[0][1]
    assert choice.choices == [" cat", " dog", " fox"] and choice.answer == 1  # label " dog" given as text
    assert load_items(config(eval_file, "perplexity"))[0][0].text == " cat"


def test_shuffle_is_seeded(eval_file):
    first = [i.line for i in load_items(config(eval_file, shuffle=True, maxExamples=4))[0]]
    assert first == [i.line for i in load_items(config(eval_file, shuffle=True, maxExamples=4))[0]] != [1, 2, 3, 4]


@pytest.mark.parametrize("task, overrides, rows, message", [
    ("generation", {}, [{"color": "red", "animal": "cat"}], "line 1: reference field (dataset.referenceFields) 'answer' is missing"),
    ("generation", {}, [{"color": "red", "answer": "x"}], "line 1: field used by dataset.promptTemplate 'animal' is missing"),
    ("generation", {}, [{"color": "red", "animal": "cat", "answer": 3}], "line 1: reference field 'answer' must be a string"),
    ("multiple-choice", {}, [{"color": "r", "animal": "a", "label": 0}], "choices field (dataset.choicesField) 'choices' is missing"),
    ("multiple-choice", {}, [{"color": "r", "animal": "a", "choices": ["x", "y"], "label": 2}], "answer field 'label' must be an option's index (0-1)"),
    ("multiple-choice", {}, [{"color": "r", "animal": "a", "choices": ["x"], "label": 0}], "needs at least two options"),
    ("perplexity", {}, [{"other": 1}], "text field (dataset.textField) 'answer' is missing"),
])
def test_check_names_file_line_and_field(tmp_path, task, overrides, rows, message):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as error:
        check_eval_dataset(config(path, task, **overrides))
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_check_missing_file_and_count(tmp_path, eval_file):
    with pytest.raises(DataError, match="not found"):
        check_eval_dataset(config(tmp_path / "nope.jsonl"))
    assert check_eval_dataset(config(eval_file, maxExamples=5)) == 5


def test_preflight_does_not_import_torch():
    code = ("import sys; import kubetune_trainer.evaluation.dataset, kubetune_trainer.evaluation.metrics; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
