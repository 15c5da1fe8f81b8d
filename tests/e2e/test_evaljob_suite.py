"""A benchmark suite EvalJob on the local control plane: two tasks (few-shot generation and
multiple-choice), two models, each task reported and the aggregate table in the status."""
from __future__ import annotations

from pathlib import Path

import pytest

from kubectl_utils import apply, condition, in_workdir, jobs_in, wait_final
from tinymodels import ANIMALS, TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster

CHOICES = [" " + a for a in ANIMALS[:3]]


@pytest.fixture(scope="session")
def suite_files(tmp_path_factory):
    """(test rows, dev rows the shots come from): the tiny task, with three options per row."""
    directory = tmp_path_factory.mktemp("suite")
    rows = [{**row, "choices": CHOICES, "label": row["answer"] if row["answer"] in CHOICES else 0} for row in make_rows(12)]
    return write_jsonl(directory / "test.jsonl", rows), write_jsonl(directory / "dev.jsonl", make_rows(6))


def test_two_task_few_shot_suite_reports_both_tasks_and_the_aggregate(
        operator, namespace, tiny_model_dir, other_tiny_model_dir, suite_files, workdir):
    test, dev = suite_files
    spec = {
        "models": [{"name": "first", "path": str(tiny_model_dir)}, {"name": "second", "path": str(other_tiny_model_dir)}],
        "tasks": [
            {"name": "qa", "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3},
             "dataset": {"path": str(test), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 8,
                         "fewShot": {"k": 2, "path": str(dev), "seed": 3}}},
            {"name": "mc", "task": "multiple-choice", "metrics": ["accuracy"],
             "dataset": {"path": str(test), "promptTemplate": TEMPLATE, "choicesField": "choices", "answerField": "label"}},
        ],
        "generation": {"batchSize": 8},
        "output": {"path": in_workdir(workdir / "suite")}, "resources": {"gpu": 0},
    }
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob", "metadata": {"name": "suite", "namespace": namespace},
           "spec": spec})
    evj = wait_final("evj", namespace, "suite")

    status = evj["status"]
    assert status["phase"] == "Succeeded", status
    assert condition(evj)["message"].startswith("evaluation finished; 2 tasks; first: qa/exactMatch ")
    assert [(t["name"], t["task"], t["examples"]) for t in status["suite"]] == [("qa", "generation", 8), ("mc", "multiple-choice", 12)]
    for task in status["suite"]:
        assert [r["model"] for r in task["results"]] == ["first", "second"]
        assert all(Path(r["predictionsPath"]).name == f"predictions-{task['name']}-{r['model']}.jsonl" for r in task["results"])
    first, second = status["results"]  # the aggregate: models as rows, <task>/<metric> and mean as columns
    assert {"qa/exactMatch", "qa/rouge1", "mc/accuracy", "mean"} <= set(first["scores"]) == set(second["scores"])
    assert second["delta"]["mean"] == pytest.approx(second["scores"]["mean"] - first["scores"]["mean"], abs=2e-4)
    assert {(s["task"], s["model"]) for s in status["samples"]} == {(t, m) for t in ("qa", "mc") for m in ("first", "second")}
    report = Path(status["artifacts"]["reportPath"]).read_text()
    assert "| model | qa/exactMatch |" in report and "| second |" in report
    assert len(jobs_in(namespace)) == 1
    scraped = operator.metrics()
    assert f'kubetune_evaljob_score{{metric="mc/accuracy",model="second",name="suite",namespace="{namespace}"}}' in scraped
