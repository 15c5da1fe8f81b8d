"""Multi-node jobs: the rank-0 Job's command and env, the worker Jobs the operator adds once the
rank-0 pod has an IP, and which pod explains a failed attempt."""
from __future__ import annotations

import json
import re

import pytest

import kubetune_api as api
from kubetune_api import wire
from kubetune_operator import attempts, builders, multinode, observe

JOB_UID = "11111111-0000-4000-8000-00000000000a"


def _spec(spec_dict, **resources):
    return api.FineTuneJobSpec.model_validate({**spec_dict, "resources": resources})


def _as_read(job: dict) -> dict:
    """The Job as the API server returns it: a uid, the controller's selector and labels."""
    job = {**job, "metadata": {**job["metadata"], "uid": JOB_UID, "resourceVersion": "7"}, "status": {}}
    controller = {"controller-uid": JOB_UID, "job-name": job["metadata"]["name"]}
    template = job["spec"]["template"]
    job["spec"] = {**job["spec"], "selector": {"matchLabels": controller},
                   "template": {**template, "metadata": {"labels": {**template["metadata"]["labels"], **controller}}}}
    return job


def _pod(name: str, owner_uid: str, phase: str, ip: str | None = None, labels: dict | None = None, **terminated) -> dict:
    status: dict = {"phase": phase}
    if ip:
        status["podIP"] = ip
    if terminated:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    return {"metadata": {"name": name, "labels": labels or {}, "ownerReferences": [{"kind": "Job", "uid": owner_uid}]},
            "status": status}


def _container(job: dict) -> dict:
    return job["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_rank_zero_job_launches_across_machines(meta, spec_dict):
    job = builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=0, nodes=3))
    container = _container(job)
    assert container["command"][:12] == ["accelerate", "launch", "--multi_gpu", "--num_processes", "3",
                                         "--num_machines", "3", "--machine_rank", "$(KUBETUNE_MACHINE_RANK)",
                                         "--main_process_ip", "$(KUBETUNE_MAIN_ADDRESS)", "--main_process_port"]
    env = _env(container)
    assert env["KUBETUNE_MACHINE_RANK"] == "0"
    assert env["KUBETUNE_MAIN_ADDRESS"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["KUBETUNE_MAIN_PORT"] == str(multinode.main_port(meta["uid"]))
    # Every $(VAR) of the command is in the env, so the kubelet expands it.
    assert set(re.findall(r"\$\((\w+)\)", " ".join(container["command"]))) <= set(env)
    for labels in (job["metadata"]["labels"], job["spec"]["template"]["metadata"]["labels"]):
        assert labels[multinode.ROLE_LABEL] == "main" and labels[multinode.RANK_LABEL] == "0"
    assert "limits" not in container["resources"] or "nvidia.com/gpu" not in container["resources"]["limits"]


@pytest.mark.parametrize("gpu, nodes, processes", [(0, 2, "2"), (1, 2, "2"), (4, 2, "8"), (2, 16, "32")])
def test_processes_are_per_gpu_and_one_per_cpu_pod(gpu, nodes, processes):
    command = builders.command(builders.FINETUNE, gpu, nodes)
    assert command[command.index("--num_processes") + 1] == processes
    assert command[command.index("--num_machines") + 1] == str(nodes)


def test_single_node_jobs_are_unchanged(meta, spec_dict):
    job = builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=2))
    assert _container(job)["command"][:5] == ["accelerate", "launch", "--multi_gpu", "--num_processes", "2"]
    assert "--num_machines" not in _container(job)["command"]
    assert "KUBETUNE_MACHINE_RANK" not in _env(_container(job))
    assert multinode.ROLE_LABEL not in job["spec"]["template"]["metadata"]["labels"]
    assert multinode.workers_to_create(1, _as_read(job), [_pod("p", JOB_UID, "Running", "10.0.0.5")]) == []


def test_port_is_fixed_per_job_and_spread():
    ports = {multinode.main_port(f"uid-{i}") for i in range(200)}
    assert multinode.main_port("uid-1") == multinode.main_port("uid-1")
    assert min(ports) >= 29500 and max(ports) < 30000 and len(ports) > 100


def test_worker_job_names_are_deterministic_and_fit_a_label():
    assert multinode.worker_job_name("demo-train-2", 1) == "demo-train-2-w1"
    long = "x" * 52 + "-train-12"
    names = [multinode.worker_job_name(long, rank) for rank in range(1, 64)]
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)
    assert len(set(names)) == 63 and names[0] == multinode.worker_job_name(long, 1)
    assert multinode.worker_job_name("y" * 52 + "-train-12", 1) != names[0]


def test_no_workers_before_the_rank_zero_pod_has_an_ip(meta, spec_dict):
    main = _as_read(builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=0, nodes=2)))
    assert multinode.workers_to_create(2, main, []) == []
    assert multinode.workers_to_create(2, main, [_pod("p", JOB_UID, "Pending")]) == []
    assert multinode.workers_to_create(2, None, []) == []


def test_workers_get_the_rank_zero_ip_their_rank_and_the_same_pod(meta, spec_dict):
    main = _as_read(builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=1, nodes=3, cpu="2"), attempt=2))
    name = main["metadata"]["name"]
    workers = multinode.workers_to_create(3, main, [_pod("p", JOB_UID, "Running", "10.1.2.3")])
    assert [w["metadata"]["name"] for w in workers] == [f"{name}-w1", f"{name}-w2"]
    for rank, worker in enumerate(workers, start=1):
        env = _env(_container(worker))
        assert env["KUBETUNE_MACHINE_RANK"] == str(rank) and env["KUBETUNE_MAIN_ADDRESS"] == "10.1.2.3"
        assert env["KUBETUNE_MAIN_PORT"] == _env(_container(main))["KUBETUNE_MAIN_PORT"]
        # Same command, image, resources, volumes as rank 0, and no API access either.
        for key in ("command", "image", "resources", "volumeMounts"):
            assert _container(worker)[key] == _container(main)[key]
        assert worker["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
        assert worker["spec"]["backoffLimit"] == 0 and "selector" not in worker["spec"]
        for labels in (worker["metadata"]["labels"], worker["spec"]["template"]["metadata"]["labels"]):
            assert labels[multinode.ROLE_LABEL] == "worker" and labels[multinode.RANK_LABEL] == str(rank)
            assert labels[multinode.MAIN_JOB_LABEL] == name and labels["kubetune.io/attempt"] == "2"
            assert labels[builders.FINETUNE.label] == "demo"
            assert "controller-uid" not in labels and "job-name" not in labels
        ftj, attempt = worker["metadata"]["ownerReferences"]
        assert ftj["kind"] == "FineTuneJob" and ftj["uid"] == meta["uid"] and ftj["controller"]
        assert (attempt["kind"], attempt["uid"], attempt["controller"]) == ("Job", JOB_UID, False)
    assert multinode.rank_of(workers[1]) == 2 and multinode.is_worker(workers[1]) and not multinode.is_worker(main)


def test_ranks_already_running_and_finished_attempts_get_no_workers(meta, spec_dict):
    main = _as_read(builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=0, nodes=3)))
    name = main["metadata"]["name"]
    rank0 = _pod("p", JOB_UID, "Running", "10.1.2.3")
    started = _pod("w1", "other", "Running", "10.1.2.4", {multinode.MAIN_JOB_LABEL: name, multinode.RANK_LABEL: "1"})
    assert [multinode.rank_of(w) for w in multinode.workers_to_create(3, main, [rank0, started])] == [2]
    stopped = {**main, "spec": {**main["spec"], "parallelism": 0}}
    complete = {**main, "status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    for over in (stopped, complete):
        assert multinode.workers_to_create(3, over, [rank0]) == []
    # A finished rank-0 pod hands over no address.
    assert multinode.workers_to_create(3, main, [_pod("p", JOB_UID, "Failed", "10.1.2.3")]) == []


def test_attempt_job_names_list_rank_zero_first():
    assert multinode.attempt_job_names("demo-train", 3) == ["demo-train", "demo-train-w1", "demo-train-w2"]
    assert multinode.attempt_job_names("demo-train", 1) == ["demo-train"]


def test_the_failure_of_an_attempt_is_the_pod_the_cluster_took_then_the_first():
    def pod(name, rank, finished, infra):
        p = _pod(name, "j", "Failed", labels={multinode.RANK_LABEL: str(rank)}, exitCode=1, finishedAt=finished)
        p["infra"] = infra
        return p

    verdict = lambda p: p.get("infra")  # noqa: E731 - None: did not fail
    rank0 = pod("rank0", 0, "2024-01-01T00:00:05Z", False)
    evicted = pod("w1", 1, "2024-01-01T00:00:09Z", True)
    first = pod("w2", 2, "2024-01-01T00:00:01Z", False)
    running = {**_pod("w3", "j", "Running"), "infra": None}
    assert multinode.first_failure([rank0, evicted, first, running], verdict) is evicted
    assert multinode.first_failure([rank0, first, running], verdict) is first
    assert multinode.first_failure([running], verdict) is None


def test_eval_jobs_and_promotion_run_on_one_pod(meta, spec_dict):
    with pytest.raises(ValueError, match="resources.nodes"):
        api.EvalJobSpec.model_validate({"models": [{"name": "m", "path": "/m"}], "dataset": {"path": "/d.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
                                        "output": {"path": "out"}, "resources": {"nodes": 2}})
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "resources": {"gpu": 2, "nodes": 4},
                                               "evaluation": {"dataset": {"path": "/d.jsonl", "promptTemplate": "{{ q }}",
                                                                              "referenceFields": ["a"]}}})
    for evaljob in builders.evaluation_jobs(meta, spec):
        assert evaljob["spec"]["resources"]["nodes"] == 1
        assert api.EvalJobSpec.model_validate(evaljob["spec"]).resources.nodes == 1
    with pytest.raises(ValueError):
        api.FineTuneJobSpec.model_validate({**spec_dict, "resources": {"nodes": 65}})
    assert api.FineTuneJobSpec.model_validate(spec_dict).resources.nodes == 1


def _attempt_pod(name: str, rank: int, phase: str, created: str, **state) -> dict:
    labels = {"kubetune.io/finetunejob": "demo", "kubetune.io/attempt": "1", multinode.RANK_LABEL: str(rank),
              multinode.ROLE_LABEL: "main" if rank == 0 else "worker"}
    pod = {"metadata": {"name": name, "labels": labels, "creationTimestamp": created},
           "spec": {"containers": [{"name": "trainer"}]},
           "status": {"phase": phase, "containerStatuses": [{"name": "trainer", "state": state or {"running": {}}}]}}
    return pod


def _exited(code: int, finished: str, message: str = "") -> dict:
    return {"terminated": {"exitCode": code, "finishedAt": finished, "message": message,
                           "reason": "Completed" if code == 0 else "Error"}}


RUNNING_JOB = {"metadata": {"name": "demo-train"}, "spec": {}, "status": {"startTime": "2024-01-01T00:00:00Z"}}


def _finished_job(ctype: str, reason: str = "") -> dict:
    return {**RUNNING_JOB, "status": {**RUNNING_JOB["status"], "conditions": [
        {"type": ctype, "status": "True", "reason": reason, "lastTransitionTime": "2024-01-01T00:01:00Z"}]}}


def test_rank_zero_success_is_the_attempts_with_its_report():
    report = json.dumps({"metrics": {"trainLoss": 0.5}, "message": "done"})
    rank0 = _attempt_pod("p0", 0, "Succeeded", "2024-01-01T00:00:00Z", **_exited(0, "2024-01-01T00:00:50Z", report))
    worker = _attempt_pod("p1", 1, "Succeeded", "2024-01-01T00:00:05Z", **_exited(0, "2024-01-01T00:00:51Z"))
    seen = multinode.observe_attempt(_finished_job("Complete"), [rank0, worker])
    assert seen.phase == api.Phase.Succeeded and "final train loss 0.5000" in seen.message
    assert seen.report["metrics"] == {"trainLoss": 0.5}


def test_a_failed_worker_fails_the_attempt_while_rank_zero_runs():
    rank0 = _attempt_pod("p0", 0, "Running", "2024-01-01T00:00:00Z")
    worker = _attempt_pod("p1", 1, "Failed", "2024-01-01T00:00:05Z",
                          **_exited(1, "2024-01-01T00:00:30Z", json.dumps({"error": "RuntimeError: boom"})))
    seen = multinode.observe_attempt(RUNNING_JOB, [rank0, worker])
    assert seen.phase == api.Phase.Failed and seen.failed_pod is worker
    assert seen.message.startswith("machine rank 1: the trainer exited with code 1") and "boom" in seen.message
    assert seen.completion_time == "2024-01-01T00:00:30Z"


def test_a_worker_the_cluster_took_explains_rank_zeros_failure():
    rank0 = _attempt_pod("p0", 0, "Failed", "2024-01-01T00:00:00Z",
                         **_exited(1, "2024-01-01T00:00:20Z", "Connection closed by peer"))
    worker = _attempt_pod("p1", 1, "Failed", "2024-01-01T00:00:05Z", **_exited(137, "2024-01-01T00:00:21Z"))
    worker["status"].update(reason="Evicted", message="The node was low on resource: memory.")
    seen = multinode.observe_attempt(_finished_job("Failed", "BackoffLimitExceeded"), [rank0, worker])
    assert seen.phase == api.Phase.Failed and seen.failed_pod is worker
    assert attempts.classify(worker, observe.describe_failure(worker))["class"] == attempts.INFRASTRUCTURE
    # Without it, rank 0's own failure stands.
    assert multinode.observe_attempt(_finished_job("Failed", "BackoffLimitExceeded"), [rank0]).failed_pod is rank0


def test_the_deadline_is_rank_zeros_verdict():
    rank0 = _attempt_pod("p0", 0, "Failed", "2024-01-01T00:00:00Z", **_exited(143, "2024-01-01T00:01:00Z"))
    worker = _attempt_pod("p1", 1, "Failed", "2024-01-01T00:00:05Z", **_exited(143, "2024-01-01T00:01:00Z"))
    seen = multinode.observe_attempt(_finished_job("Failed", "DeadlineExceeded"), [rank0, worker])
    assert seen.reason == "DeadlineExceeded"


def test_a_worker_that_cannot_start_keeps_the_attempt_pending():
    rank0 = _attempt_pod("p0", 0, "Running", "2024-01-01T00:00:00Z")
    worker = _attempt_pod("p1", 1, "Pending", "2024-01-01T00:00:05Z", waiting={})
    assert multinode.observe_attempt(RUNNING_JOB, [rank0, worker]).phase == api.Phase.Running  # just starting
    worker["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                       "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}]
    seen = multinode.observe_attempt(RUNNING_JOB, [rank0, worker])
    assert (seen.phase, seen.reason) == (api.Phase.Pending, "Unschedulable")
    assert seen.message.startswith("machine rank 1: 0/1 nodes are available")


def test_each_attempt_gets_a_random_rendezvous_token_that_every_rank_shares(meta, spec_dict):
    spec = _spec(spec_dict, gpu=0, nodes=3)
    first, second = (_as_read(builders.job(meta, builders.FINETUNE, spec, attempt=n)) for n in (1, 2))
    token = _env(_container(first))[wire.ENV_RENDEZVOUS_TOKEN]
    assert re.fullmatch(r"[0-9a-f]{64}", token) and token != _env(_container(second))[wire.ENV_RENDEZVOUS_TOKEN]
    assert meta["uid"].replace("-", "") not in token  # nothing derived from the job's own (readable) data
    workers = multinode.workers_to_create(3, first, [_pod("p", JOB_UID, "Running", "10.1.2.3")])
    assert [_env(_container(w))[wire.ENV_RENDEZVOUS_TOKEN] for w in workers] == [token, token]
    single = builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=2))
    assert wire.ENV_RENDEZVOUS_TOKEN not in _env(_container(single))


def test_network_policy_admits_only_the_jobs_own_pods(meta, spec_dict):
    multi = _spec(spec_dict, gpu=0, nodes=2)
    kinds = [o["kind"] for o in builders.children(meta, builders.FINETUNE, multi, multi.training_config())]
    assert kinds == ["ConfigMap", "NetworkPolicy", "Job"]  # before any rank can listen
    single = _spec(spec_dict, gpu=0)
    assert "NetworkPolicy" not in [o["kind"] for o in builders.children(meta, builders.FINETUNE, single, single.training_config())]
    policy = builders.network_policy(meta)
    assert policy["kind"] == "NetworkPolicy" and policy["apiVersion"] == "networking.k8s.io/v1"
    assert policy["metadata"]["namespace"] == "team-a" and policy["metadata"]["name"] == "demo-train"
    (owner,) = policy["metadata"]["ownerReferences"]
    assert owner == builders.owner_reference(meta, builders.FINETUNE) and owner["kind"] == "FineTuneJob"
    job_pods = {"matchLabels": {"kubetune.io/finetunejob": "demo"}}
    assert policy["spec"] == {"podSelector": job_pods, "policyTypes": ["Ingress"],
                              "ingress": [{"from": [{"podSelector": job_pods}]}]}  # no namespaceSelector: this namespace
    # It selects every rank's pods, workers included, of every attempt.
    main = _as_read(builders.job(meta, builders.FINETUNE, _spec(spec_dict, gpu=0, nodes=2), attempt=3))
    (worker,) = multinode.workers_to_create(2, main, [_pod("p", JOB_UID, "Running", "10.1.2.3")])
    for job in (main, worker):
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert job_pods["matchLabels"].items() <= labels.items()
