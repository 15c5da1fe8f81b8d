"""The validating admission webhook on the local cluster: the real API server calls the
operator process (https://127.0.0.1:<port>) and `kubectl apply` prints its refusal, naming the
field and the reason. (tests/operator/test_admission.py covers every rule; this proves the wiring.)"""
from __future__ import annotations

import time

import pytest
import yaml

from kubectl_utils import WEBHOOK_CONFIGURATION, apply, condition, get_json, kubectl, wait_final, wait_for

pytestmark = pytest.mark.cluster


def finetunejob(name, namespace, **change):
    """A FineTuneJob whose files do not exist: it passes admission (the pod checks files) and
    fails fast in the pod's check phase, so no training runs."""
    spec = {"model": {"path": "/nonexistent/model"},
            "dataset": {"path": "/nonexistent/rows.jsonl", "promptTemplate": "Q: {{ q }}", "completionField": "a"},
            "training": {"maxSteps": 2, "batchSize": 2, "learningRate": 0.01},
            "output": {"path": f"runs/e2e/{namespace}/out"}}
    for key, value in change.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and isinstance(spec.get(key), dict) else value
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def evaljob(name, namespace, **change):
    spec = {"models": [{"name": "base", "path": "/nonexistent/model"}, {"name": "tuned", "fineTuneJob": "not-yet"}],
            "dataset": {"path": "/nonexistent/eval.jsonl", "promptTemplate": "Q: {{ q }}", "referenceFields": ["a"]},
            "metrics": ["exact_match"], "output": {"path": f"runs/e2e/{namespace}/eval"}, **change}
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "EvalJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


BAD = {
    "completion-field-and-template": (finetunejob, {"dataset": {"completionTemplate": "{{ a }}"}},
                                      ["InvalidSpec", "spec.dataset", "completionField and completionTemplate"]),
    "path-with-tasks": (finetunejob, {"dataset": {"tasks": [{"name": "t", "path": "t.jsonl", "promptTemplate": "{{ q }}",
                                                              "completionField": "a"}]}},
                        ["InvalidSpec", "dataset.tasks", "dataset.path"]),
    "split-ratios": (finetunejob, {"dataset": {"validationRatio": 0.6, "testRatio": 0.5}},
                     ["InvalidSpec", "dataset.validationRatio + dataset.testRatio must be below 1"]),
    "block-of-another-method": (finetunejob, {"method": "full", "ia3": {}}, ["InvalidSpec", "spec.ia3", "method is full"]),
    "output-escapes": (finetunejob, {"output": {"path": "../../etc"}},
                       ["InvalidSpec", "spec.output.path", "leaves the working directory"]),
    "metric-not-for-the-task": (evaljob, {"metrics": ["rouge", "perplexity"]},
                                ["UnknownMetric", "spec.metrics", "'perplexity' cannot score task generation"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_apply_of_a_bad_spec_is_refused_with_field_and_reason(operator, namespace, case):
    make, change, words = BAD[case]
    body = make("bad", namespace, **change)
    result = apply(body, check=False)
    assert result.returncode != 0, result.stdout
    assert "denied the request" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    assert get_json(body["kind"].lower(), "bad", "-n", namespace) is None


def test_spec_is_immutable_except_suspend(operator, namespace):
    ftj = finetunejob("fixed", namespace)
    apply(ftj)  # a valid job still applies
    changed = yaml.safe_load(yaml.safe_dump(ftj))
    changed["spec"]["training"]["learningRate"] = 0.5
    result = apply(changed, check=False)
    assert result.returncode != 0
    assert "SpecImmutable: spec.training.learningRate changed; only spec.suspend may change" in result.stderr, result.stderr
    assert get_json("ftj", "fixed", "-n", namespace)["spec"]["training"]["learningRate"] == 0.01

    kubectl("patch", "ftj", "fixed", "-n", namespace, "--type", "merge", "-p", '{"spec": {"suspend": true}}')
    kubectl("label", "ftj", "fixed", "-n", namespace, "team=a")  # metadata changes pass
    stored = get_json("ftj", "fixed", "-n", namespace)
    assert stored["spec"]["suspend"] is True and stored["metadata"]["labels"]["team"] == "a"


def test_status_writes_are_the_operators_and_references_are_left_to_it(operator, namespace):
    """The operator writes status through the subresource, which only its user may change; an
    EvalJob naming a FineTuneJob that does not exist is admitted and failed by the operator."""
    apply(evaljob("ref", namespace, models=[{"name": "tuned", "fineTuneJob": "nope"}]))
    evj = wait_final("evj", namespace, "ref", timeout=60)
    assert condition(evj)["reason"] == "FineTuneJobNotFound"
    hooks = {h["name"]: h for h in get_json("validatingwebhookconfiguration", WEBHOOK_CONFIGURATION)["webhooks"]}
    assert {name: sorted(res for r in h["rules"] for res in r["resources"]) for name, h in hooks.items()} == {
        "finetunejobs.kubetune.io": ["finetunejobs"], "evaljobs.kubetune.io": ["evaljobs"],
        "status.kubetune.io": ["evaljobs/status", "finetunejobs/status"]}
    assert [r["operations"] for r in hooks["status.kubetune.io"]["rules"]] == [["UPDATE"]]
    refused = kubectl("patch", "evj", "ref", "-n", namespace, "--subresource=status", "--type=merge",
                      "-p", '{"status": {"phase": "Succeeded"}}', check=False)  # even the cluster admin
    assert refused.returncode != 0 and "written by the operator" in refused.stderr


def test_webhooks_stay_registered_so_no_refused_spec_is_admitted_while_the_operator_is_away(operator, namespace):
    """With failurePolicy Fail, as the chart installs it: a graceful stop and a kill -9 both leave
    the webhooks in place, so while the operator is away every apply is refused (none admitted
    unchecked); back, it admits good specs and refuses bad ones."""
    bad = finetunejob("while-down", namespace, output={"path": "../../etc"})
    good = finetunejob("good", namespace)
    operator.stop()
    operator.failure_policy = "Fail"
    try:
        operator.start()
        for away in (operator.stop, operator.kill):
            away()
            assert len(get_json("validatingwebhookconfiguration", WEBHOOK_CONFIGURATION)["webhooks"]) == 3
            for spec in (bad, good):
                refused = apply(spec, check=False)
                assert refused.returncode != 0 and "failed calling webhook" in refused.stderr, refused.stderr
            operator.start()
        assert "spec.output.path" in apply(bad, check=False).stderr
        apply(good)
    finally:
        operator.stop()
        operator.failure_policy = "Ignore"
        operator.start()
    assert get_json("ftj", "while-down", "-n", namespace) is None


def test_with_failure_policy_ignore_a_bad_spec_admitted_while_down_is_failed_by_the_operator(operator, namespace):
    """Locally (failurePolicy Ignore) a stopped operator lets applies through; back, it fails the
    bad spec itself, without a pod."""
    bad = finetunejob("while-down", namespace, output={"path": "../../etc"})
    try:
        operator.kill()
        started = time.monotonic()
        apply(bad)
        assert time.monotonic() - started < 10
    finally:
        operator.start()
    ftj = wait_final("ftj", namespace, "while-down", timeout=60)
    assert condition(ftj)["reason"] == "InvalidSpec"
    wait_for(lambda: apply(bad | {"metadata": {"name": "after", "namespace": namespace}}, check=False).returncode != 0,
             30, "the restarted operator to refuse again")
