"""Gang scheduling of multi-node jobs: one Indexed Job for all ranks where the server has them
(and so one Kueue Workload, read from recorded fixtures), the per-rank Jobs below 1.22, a
PodGroup under a coscheduling scheduler, and the timeout that releases an attempt whose ranks
did not all start."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

import kubetune_api as api
from kubetune_api import Phase
from kubetune_api.errors import Reason
from kubetune_operator import attempts, builders, gang, kube, kueue, multinode, observe, preflight, reconcile, shared
from kubetune_operator.builders import FINETUNE
from kubetune_operator.policy import Policy
from kubetune_operator.settings import OperatorSettings
from recording_api import RecordingApi

FIXTURES = Path(__file__).parent / "fixtures" / "kueue"
META = {"name": "demo", "namespace": "ml-team", "uid": "0b7e54f2-7d0e-4c55-b1f4-93a4c7e0d6aa"}
COSCHEDULER = "scheduler-plugins-scheduler"


def fixture(name: str) -> dict:
    return yaml.safe_load((FIXTURES / name).read_text())


@pytest.fixture
def spec(spec_dict) -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({**spec_dict, "queueName": "team-a", "nodeSelector": {"gpu": "a100"},
                                               "resources": {"gpu": 8, "nodes": 2}})


def _objects(spec, indexed=True, scheduler=None, meta=META, timeout=600):
    job = builders.job(meta, FINETUNE, spec, job_suspend_supported=True)
    return gang.attempt_objects(meta, job, spec.resources.nodes, indexed, scheduler, timeout)


def _env(job: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("version, indexed", [((1, 20), False), ((1, 21), False), ((1, 22), True), ((1, 30), True), ((2, 0), True)])
def test_indexed_jobs_from_1_22(version, indexed):
    """1.21 has Indexed Jobs behind an alpha gate (the server drops completionMode when it is
    off) and no pod hostnames: per-rank Jobs there, as on 1.20."""
    assert gang.indexed_jobs_supported(version) is indexed


def test_one_indexed_job_runs_every_rank_and_finds_rank_zero_by_dns(spec):
    service, job = _objects(spec)
    assert (service["kind"], job["kind"]) == ("Service", "Job")
    assert {k: job["spec"][k] for k in ("completionMode", "completions", "parallelism", "backoffLimit", "suspend")} == \
        {"completionMode": "Indexed", "completions": 2, "parallelism": 2, "backoffLimit": 0, "suspend": True}
    pod = job["spec"]["template"]
    assert pod["spec"]["subdomain"] == service["metadata"]["name"] == "demo-train"
    env = _env(job)
    # The rank is the pod's completion index (what the Job controller's JOB_COMPLETION_INDEX reads).
    assert env[multinode.ENV_MACHINE_RANK] == {"fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}
    assert env[multinode.ENV_MAIN_ADDRESS] == "demo-train-0.demo-train"  # <job>-<index 0>.<service>
    assert env[multinode.ENV_MAIN_PORT] == str(multinode.main_port(META["uid"])) and len(env["KUBETUNE_RENDEZVOUS_TOKEN"]) == 64
    command = pod["spec"]["containers"][0]["command"]
    assert set(re.findall(r"\$\((\w+)\)", " ".join(command))) <= set(env)  # the trainer's interface is unchanged
    assert not {multinode.RANK_LABEL, multinode.ROLE_LABEL} & (set(pod["metadata"]["labels"]) | set(job["metadata"]["labels"]))
    assert job["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a" and kueue.queued(job)


def test_the_headless_service_names_the_jobs_pods_before_they_are_ready(spec):
    service, job = _objects(spec)
    assert service["spec"] == {"clusterIP": "None", "publishNotReadyAddresses": True,
                               "selector": {"kubetune.io/finetunejob": "demo", "app.kubernetes.io/managed-by": "kubetune"}}
    assert service["spec"]["selector"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert service["metadata"]["ownerReferences"] == [builders.owner_reference(META, FINETUNE)]
    long = {**META, "name": "a.b-" + "x" * 60}  # a FineTuneJob name that is no DNS label: a hashed Service
    name = gang.service_name(long["name"])
    assert re.fullmatch(r"kubetune-[0-9a-f]{12}", name) and name == gang.service_name(long["name"])


def test_below_1_22_the_attempt_is_the_rank_zero_job_and_workers_follow(spec):
    (job,) = _objects(spec, indexed=False)
    assert job == builders.job(META, FINETUNE, spec, job_suspend_supported=True) | {"spec": job["spec"]}
    assert "completionMode" not in job["spec"] and job["spec"]["parallelism"] == 1
    env = _env(job)
    assert env[multinode.ENV_MACHINE_RANK] == "0" and env[multinode.ENV_MAIN_ADDRESS] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_single_node_attempts_are_one_job(spec_dict):
    single = api.FineTuneJobSpec.model_validate(spec_dict)
    (job,) = _objects(single, scheduler=COSCHEDULER)
    assert job == builders.job(META, FINETUNE, single, job_suspend_supported=True) | {"spec": job["spec"]}
    assert "completionMode" not in job["spec"] and gang.POD_GROUP_LABEL not in job["spec"]["template"]["metadata"]["labels"]


def test_an_indexed_job_gets_no_worker_jobs_and_its_pods_rank_by_index(spec):
    job = copy.deepcopy(_objects(spec)[-1])
    job["metadata"]["uid"] = "j1"
    pods = [{"metadata": {"name": f"demo-train-{i}-x", "annotations": {multinode.INDEX_ANNOTATION: str(i)},
                          "ownerReferences": [{"uid": "j1"}]}, "status": {"phase": "Running", "podIP": f"10.0.0.{i + 1}"}}
            for i in range(2)]
    assert multinode.workers_to_create(2, job, pods) == []
    assert [multinode.rank_of(p) for p in pods] == [0, 1]
    assert [multinode.is_worker(p) for p in pods] == [False, True]


def _failed(name, rank, code, finished, deleted=None):
    meta = {"name": name, "annotations": {multinode.INDEX_ANNOTATION: str(rank)}, "creationTimestamp": "2025-01-01T00:00:00Z"}
    if deleted:
        meta["deletionTimestamp"] = deleted
    return {"metadata": meta, "status": {"phase": "Failed", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": code, "finishedAt": finished}}}]}}


def test_a_rank_the_job_controller_stopped_after_a_peer_failed_is_not_the_cause():
    """One rank of an Indexed Job fails (exit 1); the Job controller then deletes the other,
    which dies of SIGTERM (143, the infrastructure's sign): the attempt fails for rank 1's reason."""
    cause = _failed("r1", 1, 1, "2025-01-01T00:01:00Z")
    stopped = _failed("r0", 0, 143, "2025-01-01T00:01:05Z", deleted="2025-01-01T00:01:01Z")
    assert multinode.first_failure([stopped, cause], multinode._is_infrastructure) is cause
    # A rank the cluster took first (deleted before any other failed) still explains the rest.
    evicted = _failed("r0", 0, 143, "2025-01-01T00:00:50Z", deleted="2025-01-01T00:00:40Z")
    assert multinode.first_failure([evicted, cause], multinode._is_infrastructure) is evicted


def test_a_coscheduled_attempt_gets_a_pod_group_named_on_every_pod(spec):
    service, group, job = _objects(spec, scheduler=COSCHEDULER, timeout=300)
    assert (group["apiVersion"], group["kind"]) == ("scheduling.x-k8s.io/v1alpha1", "PodGroup")
    assert group["metadata"]["name"] == job["metadata"]["name"] and group["metadata"]["namespace"] == "ml-team"
    assert group["spec"] == {"minMember": 2, "scheduleTimeoutSeconds": 300}
    assert group["metadata"]["ownerReferences"] == [builders.owner_reference(META, FINETUNE)]
    assert job["spec"]["template"]["metadata"]["labels"][gang.POD_GROUP_LABEL] == "demo-train"
    assert not [o for o in _objects(spec, scheduler="default-scheduler") if o["kind"] == "PodGroup"]


def test_coscheduling_needs_indexed_jobs_and_the_pod_group_api():
    asked = []
    served = lambda: asked.append(1) or True  # noqa: E731
    assert gang.unavailable(2, "default-scheduler", True, served) is None and asked == []
    assert gang.unavailable(1, COSCHEDULER, False, served) is None
    assert "needs Indexed Jobs (Kubernetes 1.22 or later)" in gang.unavailable(2, COSCHEDULER, False, served)
    assert "serves no scheduling.x-k8s.io/v1alpha1 podgroups" in gang.unavailable(2, COSCHEDULER, True, lambda: False)
    assert gang.unavailable(2, COSCHEDULER, True, served) is None and asked == [1]


def test_the_coscheduling_schedulers_are_a_setting(monkeypatch):
    monkeypatch.setenv("KUBETUNE_COSCHEDULING_SCHEDULERS", "gang-a, gang-b")
    monkeypatch.setattr(shared.config, "settings", OperatorSettings())
    assert gang.coscheduled("gang-b") and not gang.coscheduled(COSCHEDULER) and not gang.coscheduled(None)


def _pod(name, rank, phase, created="2025-01-01T00:00:00Z", unschedulable=False):
    status = {"phase": phase}
    if unschedulable:
        status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                 "message": "0/1 nodes are available: 1 Insufficient cpu."}]
    return {"metadata": {"name": name, "creationTimestamp": created, "labels": {multinode.RANK_LABEL: str(rank)}}, "status": status}


RANK0_STARTED = [{"name": "r0", "attempt": 1, "startedAt": "2025-01-01T00:00:05Z"}]


def test_ranks_that_did_not_all_start_in_time_fail_the_attempt_as_infrastructure():
    pods = [_pod("r0", 0, "Running"), _pod("r1", 1, "Pending", "2025-01-01T00:00:06Z", unschedulable=True)]
    assert gang.ranks_not_started(2, 1, pods, RANK0_STARTED, "2025-01-01T00:00:59Z", 60) is None  # not yet
    failure = gang.ranks_not_started(2, 1, pods, RANK0_STARTED, "2025-01-01T00:01:00Z", 60)
    assert (failure["class"], failure["reason"]) == (attempts.INFRASTRUCTURE, "RanksNotScheduled")
    assert failure["message"].startswith("1 of 2 ranks started within gang.timeoutSeconds (60 s) of the attempt's first pod "
                                         "(rank 1: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.)")
    # Under the retry policy it is retried like an eviction, and fails once no retries are left.
    assert attempts.decide(failure, 1, 0, 3).retry and not attempts.decide(failure, 1, 3, 3).retry


def test_ranks_that_all_started_never_time_out_and_a_rank_without_a_pod_is_named():
    pods = [_pod("r0", 0, "Running"), _pod("r1", 1, "Succeeded")]
    both = RANK0_STARTED + [{"name": "r1", "attempt": 1, "startedAt": "2025-01-01T00:00:07Z"}]
    assert gang.ranks_not_started(2, 1, pods, both, "2025-01-02T00:00:00Z", 60) is None
    # Records of an earlier attempt do not count for this one.
    earlier = [{**r, "attempt": 1} for r in both]
    assert gang.ranks_not_started(2, 2, pods[:1], earlier, "2025-01-02T00:00:00Z", 60) is not None
    pulling = {**_pod("r1", 1, "Pending"), "status": {"phase": "Pending", "containerStatuses": [
        {"name": "trainer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}}
    slow = gang.ranks_not_started(2, 1, [pods[0], pulling], RANK0_STARTED, "2025-01-02T00:00:00Z", 60)
    assert "(rank 1: ImagePullBackOff: Back-off pulling image)" in slow["message"]
    missing = gang.ranks_not_started(3, 1, pods[:1], RANK0_STARTED, "2025-01-02T00:00:00Z", 60)
    assert "1 of 3 ranks started" in missing["message"] and "no pod for rank 1, 2" in missing["message"]
    assert gang.ranks_not_started(2, 1, [], [], "2025-01-02T00:00:00Z", 60) is None  # queued: no pod, no clock
    assert gang.ranks_not_started(1, 1, [_pod("r0", 0, "Pending")], [], "2025-01-02T00:00:00Z", 60) is None


def test_a_failure_names_a_few_waiting_ranks_and_counts_the_rest():
    long_reason = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "x" * 5000}
    pods = [_pod("r0", 0, "Running")] + [
        {**_pod(f"r{i}", i, "Pending"), "status": {"phase": "Pending", "conditions": [long_reason]}} for i in range(1, 64)]
    failure = gang.ranks_not_started(64, 1, pods, RANK0_STARTED, "2025-01-02T00:00:00Z", 60)
    named = [f"rank {i}:" for i in range(1, 64) if f"rank {i}:" in failure["message"]]
    assert named == [f"rank {i}:" for i in range(1, gang.MAX_NAMED_RANKS + 1)]
    assert f"{63 - gang.MAX_NAMED_RANKS} more ranks waiting" in failure["message"]
    assert len(failure["message"]) < 1500  # each scheduler message cut to 200 characters


def test_the_timeout_is_the_specs_within_bounds(spec_dict):
    assert gang.timeout_seconds({}) == 600 and gang.timeout_seconds({"gang": {"timeoutSeconds": 45}}) == 45
    for bad in ({"gang": {"timeoutSeconds": 5}, "resources": {"nodes": 2}}, {"gang": {"timeoutSeconds": 90000}, "resources": {"nodes": 2}},
                {"gang": {"timeoutSeconds": 60}}):
        with pytest.raises(ValueError):
            api.FineTuneJobSpec.model_validate({**spec_dict, **bad})


# -- Kueue: one Workload for all ranks (recorded as Kueue v1beta1 stores it) ------------------------------------

def test_the_recorded_indexed_job_is_the_one_the_operator_makes(spec):
    built = _objects(spec)[-1]
    recorded = fixture("indexed-job-queued.yaml")
    keys = ("backoffLimit", "completionMode", "completions", "parallelism", "suspend")
    assert {k: recorded["spec"][k] for k in keys} == {k: built["spec"][k] for k in keys}
    assert recorded["metadata"]["labels"] == built["metadata"]["labels"]
    assert recorded["metadata"]["ownerReferences"] == built["metadata"]["ownerReferences"]
    assert recorded["spec"]["template"]["spec"]["subdomain"] == built["spec"]["template"]["spec"]["subdomain"]
    assert _env(recorded)[multinode.ENV_MAIN_ADDRESS] == _env(built)[multinode.ENV_MAIN_ADDRESS]


@pytest.mark.parametrize("name", ["indexed-workload-pending.yaml", "indexed-workload-admitted.yaml"])
def test_a_two_node_job_is_one_workload_for_both_ranks(name):
    job, workload = fixture("indexed-job-queued.yaml"), fixture(name)
    key, value = kueue.workload_selector(job).split("=")
    assert workload["metadata"]["labels"][key] == value and workload["metadata"]["ownerReferences"][0]["uid"] == value
    (pod_set,) = workload["spec"]["podSets"]
    assert pod_set["count"] == job["spec"]["parallelism"] == 2 and "minCount" not in pod_set  # no partial admission


def test_a_job_that_cannot_get_all_ranks_is_not_partly_admitted():
    """Quota for one rank of two: the one Workload waits whole, the Job stays suspended, no rank
    has a pod, and the FineTuneJob says Queued with Kueue's reason."""
    job, workload = fixture("indexed-job-queued.yaml"), fixture("indexed-workload-pending.yaml")
    assert kueue.queued(job) and not kueue.admitted(job) and "admission" not in workload["status"]
    seen = multinode.observe_attempt(job, [])
    assert (seen.phase, seen.reason) == (Phase.Queued, "Queued")
    message = kueue.message(job, workload)
    assert "waiting in LocalQueue team-a" in message and "insufficient unused quota for nvidia.com/gpu" in message
    admitted = fixture("indexed-workload-admitted.yaml")
    (assignment,) = admitted["status"]["admission"]["podSetAssignments"]
    assert assignment["count"] == 2 and assignment["resourceUsage"] == {"nvidia.com/gpu": "16"}  # both ranks at once
    assert "admitted by ClusterQueue gpu-cluster-queue" in kueue.message(job, admitted)
    resumed = {**job, "spec": {**job["spec"], "suspend": False}, "status": {}}
    pods = [{"metadata": {"name": f"demo-train-{i}", "creationTimestamp": "2025-05-14T07:09:41Z",
                          "annotations": {multinode.INDEX_ANNOTATION: str(i)}}, "status": {"phase": "Running"}} for i in range(2)]
    assert multinode.observe_attempt(resumed, pods).phase == Phase.Running


# -- launch (reconcile against a fake API) ------------------------------------------------------------------------

@pytest.fixture
def fake(monkeypatch, meta, spec_dict):
    spec = {**spec_dict, "runtime": {"name": "gang"}, "resources": {"gpu": 0, "nodes": 2}}
    fake = RecordingApi({"metadata": {**meta, "generation": 1}, "spec": spec, "status": {}}, events=[], served=True,
                        runtimes={"gang": {"metadata": {"name": "gang"}, "spec": {"schedulerName": COSCHEDULER}}})
    monkeypatch.setattr(kube, "patch_status", fake.patch_status)
    monkeypatch.setattr(kube, "ensure", fake.ensure)
    monkeypatch.setattr(kube, "read_runtime", lambda kind, namespace, name: copy.deepcopy(fake.runtimes.get(name)))
    monkeypatch.setattr(kube, "namespace_labels", lambda name: {})
    monkeypatch.setattr(kube, "api_served", lambda group, version, plural: fake.served and plural == "podgroups")
    monkeypatch.setattr(reconcile.kopf, "event", lambda obj, type, reason, message: fake.events.append((type, reason, message)))
    monkeypatch.setattr(reconcile, "sync", lambda workload, namespace, name: None)
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(policy=Policy()))
    monkeypatch.setattr(shared.config, "indexed_jobs", True)
    return fake


def _launch(fake):
    parsed = api.FineTuneJobSpec.model_validate(fake.ftj["spec"])
    reconcile.launch(FINETUNE, copy.deepcopy(fake.ftj), parsed, parsed.training_config())


@pytest.mark.parametrize("indexed, kinds, mode", [(True, ["ConfigMap", "NetworkPolicy", "Service", "Job"], "Indexed"),
                                                  (False, ["ConfigMap", "NetworkPolicy", "Job"], None)], ids=["1.22+", "1.20"])
def test_the_server_version_picks_one_indexed_job_or_the_rank_zero_job(fake, monkeypatch, indexed, kinds, mode):
    fake.runtimes["gang"]["spec"] = {}  # the default scheduler: no PodGroup
    monkeypatch.setattr(shared.config, "indexed_jobs", indexed)
    _launch(fake)
    assert [o["kind"] for o in fake.created] == kinds
    job = fake.created[-1]
    assert job["spec"].get("completionMode") == mode and job["spec"]["parallelism"] == (2 if indexed else 1)


def test_a_coscheduled_launch_creates_service_pod_group_then_the_job(fake):
    _launch(fake)
    assert [o["kind"] for o in fake.created] == ["ConfigMap", "NetworkPolicy", "Service", "PodGroup", "Job"]
    job = fake.created[-1]
    assert job["spec"]["template"]["spec"]["schedulerName"] == COSCHEDULER
    assert job["spec"]["template"]["metadata"]["labels"][gang.POD_GROUP_LABEL] == fake.created[3]["metadata"]["name"]


@pytest.mark.parametrize("served, indexed, words", [(False, True, "serves no scheduling.x-k8s.io/v1alpha1 podgroups"),
                                                    (True, False, "needs Indexed Jobs")])
def test_without_what_coscheduling_needs_the_job_fails_and_no_rank_launches(fake, monkeypatch, served, indexed, words):
    fake.served = served
    monkeypatch.setattr(shared.config, "indexed_jobs", indexed)
    _launch(fake)
    status = fake.ftj["status"]
    assert (status["phase"], status["conditions"][0]["reason"]) == ("Failed", "GangSchedulingUnavailable") and words in status["message"]
    assert not [o for o in fake.created if o["kind"] in ("Job", "PodGroup")]
    assert ("Warning", "GangSchedulingUnavailable", status["message"]) in fake.events


def test_observe_treats_index_zero_as_the_reporting_pod():
    """rank 0 of an Indexed Job (index 0) is the one whose report and success count."""
    pods = [{"metadata": {"name": f"p{i}", "creationTimestamp": f"2025-01-01T00:00:0{i}Z",
                          "annotations": {multinode.INDEX_ANNOTATION: str(i)}}, "status": {"phase": "Running"}} for i in (0, 1)]
    assert reconcile._main_pod(pods)["metadata"]["name"] == "p0"
    assert observe.observe(None, []).phase == Phase.Pending  # unchanged for a missing Job


def test_names_that_make_no_pod_hostname_are_refused_before_launch_where_jobs_are_indexed(spec_dict, monkeypatch):
    """An Indexed Job's pods are named <job>-<index> as hostnames (DNS labels): a dotted or too
    long name would launch pods the API refuses, so it fails at once as InvalidName."""
    spec = {**spec_dict, "resources": {"gpu": 0, "nodes": 2}}
    monkeypatch.setattr(shared.config, "indexed_jobs", True)
    longest_spec = {**spec, "backoffLimit": 20, "resources": {"gpu": 0, "nodes": 11}}
    for name, body, longest in (("llama3.1-chat", spec, "llama3.1-chat-train-4-1"),
                                ("a" * 52, longest_spec, "a" * 52 + "-train-21-10")):  # 64 characters
        with pytest.raises(preflight.Invalid) as refused:
            preflight.validate(name, body)
        assert refused.value.reason == Reason.InvalidName and repr(longest) in str(refused.value)
    assert preflight.validate("a" * 51, longest_spec).resources.nodes == 11  # 63 characters: a DNS label
    assert preflight.validate("llama3.1-chat", {**spec_dict, "resources": {"gpu": 0}})  # one pod: no hostname made
    monkeypatch.setattr(shared.config, "indexed_jobs", False)  # per-rank Jobs: pods keep their generated names
    assert preflight.validate("llama3.1-chat", spec)
