"""The operator checks runtime and policy again at launch (reconcile, against a fake API): a job
admitted before its runtime went away or stopped allowing it fails with the reason and no Job;
a launch records the runtime it used; an operator restart never fails an attempt that runs."""
from __future__ import annotations

import copy

import pytest

import kubetune_api as api
from kubetune_operator import kube, reconcile, shared
from kubetune_operator.builders import FINETUNE
from kubetune_operator.policy import Policy
from kubetune_operator.settings import OperatorSettings
from recording_api import RecordingApi


@pytest.fixture
def fake(monkeypatch, meta, spec_dict):
    ftj = {"metadata": {**meta, "generation": 1}, "spec": {**spec_dict, "runtime": {"name": "gpu"}}, "status": {}}
    fake = RecordingApi(ftj, synced=0, runtimes={"gpu": {"metadata": {"name": "gpu", "generation": 4}, "spec": {"image": "registry.example/gpu:1"}}})
    monkeypatch.setattr(kube, "patch_status", fake.patch_status)
    monkeypatch.setattr(kube, "ensure", fake.ensure)
    monkeypatch.setattr(kube, "read_runtime", lambda kind, namespace, name: copy.deepcopy(fake.runtimes.get(name)))
    monkeypatch.setattr(kube, "namespace_labels", lambda name: {})
    monkeypatch.setattr(reconcile.kopf, "event", lambda obj, type, reason, message: fake.events.append((type, reason, message)))
    monkeypatch.setattr(reconcile, "sync", lambda workload, namespace, name: setattr(fake, "synced", fake.synced + 1))
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(policy=Policy()))
    return fake


def _launch(fake):
    spec = api.FineTuneJobSpec.model_validate(fake.ftj["spec"])
    reconcile.launch(FINETUNE, copy.deepcopy(fake.ftj), spec, spec.training_config())


def test_a_launch_uses_the_runtime_and_records_it(fake):
    _launch(fake)
    (job,) = [o for o in fake.created if o["kind"] == "Job"]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/gpu:1"
    runtime = fake.ftj["status"]["runtime"]
    assert {k: runtime[k] for k in ("kind", "name", "generation")} == {"kind": "ClusterTrainingRuntime", "name": "gpu", "generation": 4}
    assert runtime["digest"].startswith("sha256:") and fake.ftj["status"]["specDigest"].startswith("sha256:")


@pytest.mark.parametrize("runtimes, reason, words", [
    ({}, "RuntimeNotFound", "spec.runtime: ClusterTrainingRuntime 'gpu' does not exist"),
    ({"gpu": {"metadata": {}, "spec": {"namespaces": ["team-b"]}}}, "RuntimeNotAllowed", "does not allow namespace 'team-a'"),
    ({"gpu": {"metadata": {}, "spec": {"resources": {"max": {"gpu": 0}}}}}, "PolicyViolation", "resources.max.gpu"),
], ids=["deleted", "namespace-removed", "max-lowered"])
def test_a_runtime_that_no_longer_allows_the_job_fails_it_without_a_job(fake, runtimes, reason, words):
    fake.runtimes = runtimes
    _launch(fake)
    status = fake.ftj["status"]
    (succeeded,) = status["conditions"]
    assert (status["phase"], succeeded["reason"]) == ("Failed", reason) and words in status["message"]
    assert fake.created == [] and "specDigest" not in status
    assert ("Warning", reason, status["message"]) in fake.events


def test_a_policy_changed_since_apply_fails_the_job(fake, monkeypatch):
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(policy=Policy(require_runtime=True)))
    fake.ftj["spec"]["image"] = "mine:1"
    fake.runtimes = {"gpu": {"metadata": {}, "spec": {}}}
    _launch(fake)
    assert fake.ftj["status"]["conditions"][0]["reason"] == "PolicyViolation" and fake.created == []


def test_an_operator_restart_leaves_a_launched_attempt_running(fake):
    """kopf's resume handler launches again (get-or-create); a runtime gone since does not fail
    the attempt that runs: the next attempt, if any, checks again."""
    fake.ftj["status"] = {"specDigest": "sha256:earlier", "phase": "Running"}
    fake.runtimes = {}
    _launch(fake)
    assert fake.ftj["status"]["phase"] == "Running" and fake.created == [] and fake.synced == 1


def test_a_retry_after_the_runtime_changed_says_so(fake):
    fake.ftj["status"] = {"runtime": {"kind": "ClusterTrainingRuntime", "name": "gpu", "generation": 3, "digest": "sha256:old"},
                          "attempt": 1}
    record = reconcile.start_attempt(FINETUNE, copy.deepcopy(fake.ftj), 2)
    assert record["generation"] == 4 and record["digest"] != "sha256:old"
    assert any(event[:2] == ("Warning", "RuntimeChanged") and "attempt 2" in event[2] for event in fake.events)
    fake.runtimes = {}
    assert reconcile.launch_refusal(FINETUNE, fake.ftj).reason == api.Reason.RuntimeNotFound
