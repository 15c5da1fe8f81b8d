"""Promotion gates and usage end to end on the local control plane: a gate that passes
promotes a model that reloads with plain transformers; one that fails promotes nothing and
says which rule and value."""
from __future__ import annotations

import json

import pytest

from kubectl_utils import apply, condition, events_for, get_json, in_workdir, wait_final, wait_for
from tinymodels import TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("promotion") / "animals.jsonl", make_rows(24))


def gated_job(namespace, model, data, workdir, rules, merge=False):
    spec = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.2, "testRatio": 0.2},
        "method": "lora", "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01},
        "output": {"path": in_workdir(workdir / "out")},
        "resources": {"gpu": 1},
        "evaluation": {"dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 8},
                       "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3}},
        "promotion": {"rules": rules, "destination": in_workdir(workdir / "promoted"), "mergeAdapter": merge},
    }
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "gated", "namespace": namespace}, "spec": spec})
    ftj = wait_final("ftj", namespace, "gated")
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]

    def decided():
        ftj = get_json("ftj", "gated", "-n", namespace)
        return ftj if any(c["type"] == "Promoted" and c["status"] != "Unknown" for c in ftj["status"].get("conditions", [])) else None
    return wait_for(decided, 240, "the promotion to be decided")


def test_a_passing_gate_promotes_a_model_that_reloads(operator, namespace, tiny_model_dir, qa_file, workdir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rules = [{"metric": "rougeL", "minScore": 0.0}, {"metric": "exactMatch", "minDelta": -1.0, "minDeltaLowerBound": -1.0}]
    ftj = gated_job(namespace, tiny_model_dir, qa_file, workdir, rules, merge=True)
    promoted = condition(ftj, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("True", "Promoted"), promoted
    assert "rougeL" in promoted["message"] and "✓" in promoted["message"]
    promotion = ftj["status"]["promotion"]
    assert promotion["phase"] == "Succeeded" and promotion["jobName"] == "gated-promote"
    assert [r["passed"] for r in promotion["rules"]] == [True, True, True]
    evaluation, bound = ftj["status"]["evaluation"], promotion["rules"][2]
    assert bound["check"] == "minDeltaLowerBound" and bound["level"] == evaluation["deltaLevel"] == 0.95
    assert bound["value"] == evaluation["deltaLow"]["exactMatch"] <= evaluation["delta"]["exactMatch"] <= bound["high"]

    destination = workdir / "promoted"
    assert {"model", "README.md", "training_summary.json", "scores.json", "promotion.json"} <= {p.name for p in destination.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(destination / "model")
    tokenizer = AutoTokenizer.from_pretrained(destination / "model")
    assert model(**tokenizer("Which animal is red cat?", return_tensors="pt")).logits.shape[-1] == model.config.vocab_size
    record = json.loads((destination / "promotion.json").read_text())
    assert record["fineTuneJob"]["name"] == "gated" and record["merged"] is True
    assert ("Normal", "Promoted") in events_for(namespace, "gated")

    usage = ftj["status"]["usage"]
    assert usage["gpuSeconds"] > 0 and usage["attempts"] == 1 and usage["podSeconds"] > 0 and usage["trainingTokens"] > 0
    scraped = operator.metrics()
    assert f'kubetune_promotions_total{{namespace="{namespace}",outcome="promoted"}} 1.0' in scraped
    assert f'kubetune_pod_seconds_total{{kind="FineTuneJob",namespace="{namespace}"}}' in scraped


def test_a_failing_gate_promotes_nothing_and_names_the_rule(operator, namespace, tiny_model_dir, qa_file, workdir):
    ftj = gated_job(namespace, tiny_model_dir, qa_file, workdir, [{"metric": "rougeL", "minScore": 2.0}])
    promoted = condition(ftj, "Promoted")
    assert (promoted["status"], promoted["reason"]) == ("False", "GateFailed"), promoted
    value = ftj["status"]["evaluation"]["scores"]["rougeL"]
    assert promoted["message"] == f"promotion gate failed: rougeL {value:.4f} ≥ 2.0000 ✗"
    assert ftj["status"]["promotion"]["rules"][0] == {"metric": "rougeL", "check": "minScore", "threshold": 2.0,
                                                      "value": value, "passed": False}
    assert not (workdir / "promoted").exists()
    assert get_json("jobs", "gated-promote", "-n", namespace) is None
    assert ("Warning", "GateFailed") in events_for(namespace, "gated")
