"""EvalJob end to end on the local control plane: models side by side, FineTuneJob
references, automatic evaluation after training, and bad input with named reasons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubectl_utils import (apply, condition, events_for, get_json, in_workdir, jobs_in, kubectl, wait_final, wait_for,
                           webhooks_off)
from tinymodels import TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("eval") / "animals.jsonl", make_rows(24))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    rows = [{"text": f"Which animal is {c} {a}? Answer: {a}"} for c, a in [("red", "cat"), ("blue", "dog"), ("green", "owl")]]
    return write_jsonl(tmp_path_factory.mktemp("retention") / "text.jsonl", rows)


def evaljob(name, namespace, models, data, output, **spec):
    body = {"models": models,
            "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
            "metrics": ["exact_match", "rouge", "bleu"],
            "generation": {"maxNewTokens": 3, "batchSize": 8},
            "output": {"path": in_workdir(output)}, "resources": {"gpu": 0}, **spec}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob", "metadata": {"name": name, "namespace": namespace}, "spec": body}


def test_two_models_scored_side_by_side(operator, namespace, tiny_model_dir, other_tiny_model_dir, qa_file, workdir):
    models = [{"name": "first", "path": str(tiny_model_dir)}, {"name": "second", "path": str(other_tiny_model_dir)}]
    apply(evaljob("pair", namespace, models, qa_file, workdir / "out"))
    evj = wait_final("evj", namespace, "pair")

    status = evj["status"]
    assert status["phase"] == "Succeeded", status
    assert condition(evj)["reason"] == "Completed" and condition(evj)["status"] == "True"
    first, second = status["results"]
    assert (first["model"], second["model"]) == ("first", "second")
    for result in (first, second):
        assert result["examples"] == 24
        assert {"exactMatch", "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"} <= set(result["scores"])
        assert Path(result["predictionsPath"]).exists()
    for metric, value in second["scores"].items():
        assert second["delta"][metric] == pytest.approx(value - first["scores"][metric], abs=2e-4)
    assert {s["model"] for s in status["samples"]} == {"first", "second"}
    scores = json.loads(Path(status["artifacts"]["scoresPath"]).read_text())
    assert scores  # the full results file the status summarizes
    assert status["progress"]["percent"] == 100

    assert len(jobs_in(namespace)) == 1
    table = kubectl("get", "evj", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "TASK", "PROGRESS", "AGE"]
    assert table[1].split()[:4] == ["pair", "Succeeded", "generation", "100"]
    scraped = operator.metrics()
    assert f'kubetune_evaljob_score{{metric="rougeL",model="second",name="pair",namespace="{namespace}"}}' in scraped


def test_finetunejob_evaluation_block_creates_and_mirrors_an_evaljob(operator, namespace, tiny_model_dir, qa_file, text_file, workdir):
    spec = {
        "model": {"path": str(tiny_model_dir)},
        "dataset": {"path": str(qa_file), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.2, "testRatio": 0.2},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 6, "batchSize": 4, "learningRate": 0.01},
        "output": {"path": in_workdir(workdir / "out")},
        "resources": {"gpu": 1},
        "evaluation": {
            "dataset": {"path": str(qa_file), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 8},
            "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3},
            "retention": {"path": str(text_file), "promptTemplate": "{{ text }}", "textField": "text"},
        },
    }
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "tuned", "namespace": namespace}, "spec": spec})
    assert wait_final("ftj", namespace, "tuned")["status"]["phase"] == "Succeeded"
    scores_job = wait_final("evj", namespace, "tuned-eval")
    retention_job = wait_final("evj", namespace, "tuned-retention")
    for evj in (scores_job, retention_job):
        assert evj["status"]["phase"] == "Succeeded", evj["status"]
        assert evj["metadata"]["ownerReferences"][0]["name"] == "tuned"
        assert [r["model"] for r in evj["status"]["results"]] == ["base", "tuned"]

    def mirrored():
        ftj = get_json("ftj", "tuned", "-n", namespace)
        return ftj if any(c["type"] == "Evaluated" and c["status"] != "Unknown" for c in ftj["status"].get("conditions", [])) else None
    ftj = wait_for(mirrored, 60, "the evaluation to be mirrored into the FineTuneJob")
    evaluation = ftj["status"]["evaluation"]
    tuned = scores_job["status"]["results"][1]
    assert (condition(ftj, "Evaluated")["status"], condition(ftj, "Evaluated")["reason"]) == ("True", "Evaluated")
    assert evaluation["evalJob"] == "tuned-eval" and evaluation["scores"] == tuned["scores"] and evaluation["delta"] == tuned["delta"]
    assert evaluation["retentionEvalJob"] == "tuned-retention"
    assert evaluation["forgetting"] == retention_job["status"]["results"][1]["delta"] and "perplexity" in evaluation["forgetting"]
    assert ("Normal", "EvaluationCreated") in events_for(namespace, "tuned")


@pytest.mark.parametrize("case, reason, words", [
    ("missing-finetunejob", "FineTuneJobNotFound", ["'nope' does not exist"]),
    ("failed-finetunejob", "FineTuneJobFailed", ["'broken' failed"]),
    ("escaping-output", "InvalidSpec", ["spec.output.path", "leaves the working directory"]),
])
def test_bad_references_and_spec_fail_without_a_pod(operator, namespace, tiny_model_dir, qa_file, workdir, case, reason, words):
    models = [{"name": "base", "path": str(tiny_model_dir)}]
    spec = {}
    if case == "missing-finetunejob":
        models.append({"name": "tuned", "fineTuneJob": "nope"})
    elif case == "failed-finetunejob":
        broken = {"model": {"path": "/nonexistent/model"}, "dataset": {"path": str(qa_file), "promptTemplate": TEMPLATE, "completionField": "answer"},
                  "output": {"path": in_workdir(workdir / "x")}}
        apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "broken", "namespace": namespace}, "spec": broken})
        wait_final("ftj", namespace, "broken", timeout=120)
        models.append({"name": "tuned", "fineTuneJob": "broken"})
    body = evaljob("bad", namespace, models, qa_file, workdir / "out", **spec)
    if case == "escaping-output":  # refused by the webhook (test_admission.py); here past it
        body["spec"]["output"] = {"path": "../../etc"}
    with webhooks_off():
        apply(body)
    evj = wait_final("evj", namespace, "bad", timeout=60)
    assert evj["status"]["phase"] == "Failed"
    assert (condition(evj)["status"], condition(evj)["reason"]) == ("False", reason)
    for word in words:
        assert word in condition(evj)["message"]
    assert ("Warning", reason) in events_for(namespace, "bad")
    assert [j for j in jobs_in(namespace) if j["metadata"]["name"] == "bad-eval"] == []


def test_missing_column_fails_in_the_pods_check_phase(operator, namespace, tiny_model_dir, qa_file, workdir):
    dataset = {"path": str(qa_file), "promptTemplate": TEMPLATE, "referenceFields": ["summary"]}
    apply(evaljob("bad", namespace, [{"name": "base", "path": str(tiny_model_dir)}], qa_file, workdir / "out",
                  dataset=dataset))
    evj = wait_final("evj", namespace, "bad", timeout=120)
    assert (evj["status"]["phase"], condition(evj)["reason"]) == ("Failed", "InvalidDataset")
    assert "summary" in condition(evj)["message"]
    assert len(get_json("pods", "-n", namespace)["items"]) == 1 and not (workdir / "out").exists()


def test_an_evaluate_metric_the_operator_does_not_allow_is_refused_at_apply(operator, namespace, tiny_model_dir, qa_file, workdir):
    # Not built in: loading it through evaluate would run a script in the pod; the operator allows none.
    result = apply(evaljob("hub", namespace, [{"name": "base", "path": str(tiny_model_dir)}], qa_file, workdir / "out",
                           metrics=["no_such_metric"]), check=False)
    assert result.returncode != 0 and "UnknownMetric" in result.stderr and "'no_such_metric'" in result.stderr, result.stderr
    assert get_json("evj", "hub", "-n", namespace) is None


def test_schema_refuses_an_unknown_task(namespace, tiny_model_dir, qa_file, workdir):
    result = apply(evaljob("bad", namespace, [{"name": "base", "path": str(tiny_model_dir)}], qa_file, workdir, task="translation"), check=False)
    assert result.returncode != 0 and "spec.task" in result.stderr and "Unsupported value" in result.stderr, result.stderr
