"""The promotion handlers against a fake API: gate failed, gate passed -> Job -> Promoted."""
import copy
import json

import pytest

from kubetune_operator import followups, kube, metrics
from recording_api import RecordingApi

EVALUATION = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}


@pytest.fixture
def api(monkeypatch, meta, spec_dict):
    spec = {**spec_dict, "evaluation": EVALUATION,
            "promotion": {"rules": [{"metric": "rougeL", "minScore": 0.3}], "destination": "runs/promoted"}}
    ftj = {"metadata": {**meta, "generation": 1}, "spec": spec, "status": {
        "phase": "Succeeded", "artifacts": {"outputPath": "/w/runs/out", "modelPath": "/w/runs/out/adapter"},
        "evaluation": {"scores": {"rougeL": 0.41}},
        "conditions": [{"type": "Evaluated", "status": "True", "reason": "Evaluated"}]}}
    fake = RecordingApi(ftj, job=None, pods=[])
    monkeypatch.setattr(kube, "read_object", lambda plural, namespace, name: copy.deepcopy(fake.ftj))
    monkeypatch.setattr(kube, "patch_status", fake.patch_status)
    monkeypatch.setattr(kube, "ensure", fake.ensure)
    monkeypatch.setattr(kube, "read_job", lambda namespace, name: fake.job)
    monkeypatch.setattr(kube, "list_pods", lambda namespace, selector: fake.pods)
    monkeypatch.setattr(followups.kopf, "event", lambda obj, type, reason, message: fake.events.append((type, reason, message)))
    return fake


def _promoted(fake):
    return next(c for c in fake.ftj["status"]["conditions"] if c["type"] == "Promoted")


def _count(namespace, outcome):
    return metrics.PROMOTIONS.labels(namespace, outcome)._value.get()


def test_a_failed_gate_creates_nothing_and_says_why(api):
    api.ftj["status"]["evaluation"]["scores"]["rougeL"] = 0.12
    before = _count("team-a", "gate_failed")
    followups.ensure_promotion("team-a", "demo")
    promoted = _promoted(api)
    assert (promoted["status"], promoted["reason"]) == ("False", "GateFailed")
    assert promoted["message"] == "promotion gate failed: rougeL 0.1200 ≥ 0.3000 ✗"
    assert api.created == [] and api.ftj["status"]["promotion"]["phase"] == "Failed"
    assert api.events == [("Warning", "GateFailed", promoted["message"])]
    assert _count("team-a", "gate_failed") == before + 1
    followups.ensure_promotion("team-a", "demo")  # decided: never counted twice
    assert _count("team-a", "gate_failed") == before + 1 and len(api.events) == 1


def test_waiting_for_the_evaluation_is_pending(api):
    api.ftj["status"]["conditions"][0].update(status="Unknown", reason="Evaluating")
    followups.ensure_promotion("team-a", "demo")
    assert (_promoted(api)["status"], _promoted(api)["reason"]) == ("Unknown", "PromotionPending")
    assert api.ftj["status"]["promotion"]["phase"] == "Pending" and api.created == []


def test_a_passing_gate_runs_the_promotion_job_until_promoted(api):
    before = _count("team-a", "promoted")
    followups.ensure_promotion("team-a", "demo")
    assert [o["kind"] for o in api.created] == ["ConfigMap", "Job"]
    assert (_promoted(api)["status"], _promoted(api)["reason"]) == ("Unknown", "Promoting")
    assert api.ftj["status"]["promotion"]["jobName"] == "demo-promote"
    followups.ensure_promotion("team-a", "demo")  # the Job runs: not created again
    assert len(api.created) == 2

    summary = json.dumps({"artifacts": {"modelPath": "runs/promoted/adapter"}, "message": "promoted to runs/promoted"})
    # A look-alike Job of that name (not owned by the FineTuneJob) that "completed" decides nothing.
    api.job = {"metadata": {"name": "demo-promote", "uid": "fake"}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    api.pods = [{"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z", "ownerReferences": [{"uid": "fake"}]},
                 "status": {"phase": "Succeeded", "containerStatuses": [
                     {"name": "promoter", "state": {"terminated": {"exitCode": 0, "message": summary}}}]}}]
    followups.sync_promotion("team-a", "demo")
    assert (_promoted(api)["status"], _promoted(api)["reason"]) == ("Unknown", "Promoting")
    api.job["metadata"].update(uid="job-uid", ownerReferences=[{"uid": api.ftj["metadata"]["uid"], "kind": "FineTuneJob"}])
    api.pods[0]["metadata"]["ownerReferences"] = [{"uid": "job-uid"}]
    followups.sync_promotion("team-a", "demo")
    promoted = _promoted(api)
    assert (promoted["status"], promoted["reason"]) == ("True", "Promoted")
    assert promoted["message"] == "promoted to runs/promoted: rougeL 0.4100 ≥ 0.3000 ✓"
    assert api.ftj["status"]["promotion"]["phase"] == "Succeeded"
    assert ("Normal", "Promoted", promoted["message"]) in api.events and _count("team-a", "promoted") == before + 1
