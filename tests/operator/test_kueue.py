"""Kueue: the operator creates a queued Job suspended where the server has Job suspend
(1.21+), the label alone on 1.20, and reads Kueue's state from recorded Job and Workload
objects (tests/operator/fixtures/kueue/, as a 1.30 API server with Kueue stores them)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import kubetune_api as api
from kubetune_operator import builders, kube, kueue

FIXTURES = Path(__file__).parent / "fixtures" / "kueue"


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.fixture
def spec() -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({
        "model": {"path": "/m"}, "dataset": {"path": "d.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"},
        "output": {"path": "out"}, "queueName": "team-a", "nodeSelector": {"gpu": "a100"}})


META = {"name": "demo", "namespace": "ml-team", "uid": "0b7e54f2-7d0e-4c55-b1f4-93a4c7e0d6aa"}


@pytest.mark.parametrize("version, supported", [((1, 20), False), ((1, 21), True), ((1, 30), True), ((2, 0), True)])
def test_job_suspend_exists_from_1_21(version, supported):
    assert kueue.job_suspend_supported(version) is supported


def test_on_servers_with_suspend_a_queued_job_is_created_suspended(spec):
    job = builders.job(META, builders.FINETUNE, spec, job_suspend_supported=True)
    assert job["spec"]["suspend"] is True
    assert job["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"
    assert kueue.queued(job) and kueue.queue_name(job) == "team-a"


def test_on_1_20_a_queued_job_carries_the_label_only(spec):
    job = builders.job(META, builders.FINETUNE, spec, job_suspend_supported=False)
    assert "suspend" not in job["spec"] and job["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"
    assert not kueue.queued(job) and kueue.admitted(job)


def test_a_job_without_a_queue_is_never_suspended(spec):
    job = builders.job(META, builders.FINETUNE, spec.model_copy(update={"queue_name": None}), job_suspend_supported=True)
    assert "suspend" not in job["spec"] and kueue.QUEUE_LABEL not in job["metadata"]["labels"]
    assert not kueue.queued(job) and not kueue.admitted(job)


def test_the_recorded_job_is_the_one_the_builder_makes(spec):
    """The fixtures hold what the operator sends, plus what the API server and Kueue add."""
    built = builders.job(META, builders.FINETUNE, spec, job_suspend_supported=True)
    recorded = fixture("job-queued.yaml")
    assert recorded["metadata"]["labels"] == built["metadata"]["labels"]
    assert recorded["metadata"]["ownerReferences"] == built["metadata"]["ownerReferences"]
    assert recorded["metadata"]["name"] == built["metadata"]["name"]
    assert {k: recorded["spec"][k] for k in ("backoffLimit", "completions", "parallelism", "suspend")} == \
        {k: built["spec"][k] for k in ("backoffLimit", "completions", "parallelism", "suspend")}
    assert builders.KUEUE_QUEUE_LABEL == kueue.QUEUE_LABEL


@pytest.mark.parametrize("name, queued, admitted", [
    ("job-queued.yaml", True, False),  # created suspended, Kueue has not admitted it
    ("job-admitted.yaml", False, True),  # Kueue unsuspended it: the pod runs
    ("job-requeued.yaml", True, False),  # preempted: suspended again, waiting for another admission
    ("job-complete.yaml", False, True),  # done: nothing holds it
    ("job-1.20-label-only.yaml", False, True),  # no suspend on 1.20: it ran at once
])
def test_queued_and_admitted_from_recorded_jobs(name, queued, admitted):
    job = fixture(name)
    assert kueue.queued(job) is queued
    assert kueue.admitted(job) is admitted


def test_admission_injects_the_flavor_node_labels_and_keeps_ours():
    queued, admitted = fixture("job-queued.yaml"), fixture("job-admitted.yaml")
    before = queued["spec"]["template"]["spec"]["nodeSelector"]
    after = admitted["spec"]["template"]["spec"]["nodeSelector"]
    assert before.items() < after.items() and "cloud.google.com/gke-accelerator" in after
    assert "startTime" in admitted["status"] and "startTime" not in queued["status"]


def test_every_workload_belongs_to_the_recorded_job():
    job = fixture("job-queued.yaml")
    key, value = kueue.workload_selector(job).split("=")
    for path in FIXTURES.glob("workload-*.yaml"):
        workload = yaml.safe_load(path.read_text())
        assert workload["metadata"]["labels"][key] == value, path.name
        assert workload["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        assert workload["spec"]["queueName"] == kueue.queue_name(job)


def test_message_without_a_workload_says_where_to_look():
    message = kueue.message(fixture("job-queued.yaml"))
    assert message.startswith("queued in LocalQueue team-a: waiting for Kueue to admit the Job")
    assert "kubectl get workloads -n ml-team -l kueue.x-k8s.io/job-uid=6f1b6f0e-0c1a-4a4e-9a51-2f5a1d3c9e01" in message


@pytest.mark.parametrize("workload, words", [
    ("workload-pending.yaml", ["waiting in LocalQueue team-a", "insufficient unused quota for nvidia.com/gpu", "1 more needed"]),
    ("workload-inadmissible.yaml", ["Kueue cannot admit it from LocalQueue team-a", "LocalQueue team-a doesn't exist"]),
    ("workload-unattempted.yaml", ["Kueue has not tried to admit it yet"]),
    ("workload-admission-checks.yaml", ["quota reserved in ClusterQueue gpu-cluster-queue", "admission checks: dws-prov (Pending)"]),
    ("workload-preempted.yaml", ["evicted by Kueue (Preempted: Preempted to accommodate a higher priority Workload)",
                                 "insufficient unused quota"]),
    ("workload-admitted.yaml", ["admitted by ClusterQueue gpu-cluster-queue"]),
])
def test_message_from_the_workload_says_why_it_waits(workload, words):
    message = kueue.message(fixture("job-queued.yaml"), fixture(workload))
    for text in words:
        assert text in message, message


@pytest.mark.parametrize("major, minor, expected", [("1", "20", (1, 20)), ("1", "27+", (1, 27)), ("1", "30", (1, 30))])
def test_server_version_reads_major_and_minor(monkeypatch, major, minor, expected):
    monkeypatch.setattr(kube.kubernetes.client, "VersionApi",
                        lambda: SimpleNamespace(get_code=lambda: SimpleNamespace(major=major, minor=minor)))
    assert kube.server_version() == expected
    assert kueue.job_suspend_supported(kube.server_version()) is (expected >= (1, 21))
