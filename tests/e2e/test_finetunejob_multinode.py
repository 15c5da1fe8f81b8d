"""Multi-node training on the local cluster: `resources: {gpu: 0, nodes: 2}` runs two pods of
one CPU process each (gloo across pods, the rank-0 pod IP handed over by the operator) and
trains like one pod with two processes on the same data and seed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from kubectl_utils import apply, get_json, jobs_in, wait_final, wait_for
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster

TRAINING = {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01, "evalEverySteps": 2, "checkpointEverySteps": 2}


def _pods(namespace: str, name: str) -> list[dict]:
    return get_json("pods", "-n", namespace, "-l", f"kubetune.io/finetunejob={name}")["items"]


def test_two_pods_of_one_process_train_like_one_pod_of_two(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("two-nodes", namespace, tiny_model_dir, rows_file, workdir / "nodes",
                      training=TRAINING, resources={"gpu": 0, "nodes": 2}))
    ftj = wait_final("ftj", namespace, "two-nodes")
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["step"] == 4 and status["metrics"]["testLoss"] > 0

    # Rank 0's success is the job's; the worker exits on its own a moment later.
    pods = wait_for(lambda: (ps := _pods(namespace, "two-nodes")) and all(p["status"]["phase"] == "Succeeded" for p in ps) and ps,
                    60, "every rank's pod to succeed")
    roles = sorted((p["metadata"]["labels"]["kubetune.io/role"], p["metadata"]["labels"]["kubetune.io/rank"]) for p in pods)
    assert roles == [("main", "0"), ("worker", "1")]
    main = next(p for p in pods if p["metadata"]["labels"]["kubetune.io/rank"] == "0")
    worker = next(p for p in pods if p["metadata"]["labels"]["kubetune.io/rank"] == "1")
    env = {e["name"]: e.get("value") for e in worker["spec"]["containers"][0]["env"]}
    assert env["KUBETUNE_MAIN_ADDRESS"] == main["status"]["podIP"] != worker["status"]["podIP"]
    # Only the job's own ranks may join: they share a per-attempt token, and a NetworkPolicy admits
    # no other pod (where the cluster enforces them).
    main_env = {e["name"]: e.get("value") for e in main["spec"]["containers"][0]["env"]}
    assert len(env["KUBETUNE_RENDEZVOUS_TOKEN"]) == 64 and env["KUBETUNE_RENDEZVOUS_TOKEN"] == main_env["KUBETUNE_RENDEZVOUS_TOKEN"]
    policy = get_json("networkpolicy", "two-nodes-train", "-n", namespace)
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"kubetune.io/finetunejob": "two-nodes"}}}]}]
    assert sorted(j["metadata"]["name"] for j in jobs_in(namespace)) == ["two-nodes-train", "two-nodes-train-w1"]
    summary = json.loads((workdir / "nodes" / "training_summary.json").read_text())
    assert summary["processes"] == 2
    assert {"rng-0.pt", "rng-1.pt"} <= {p.name for p in (workdir / "nodes" / "checkpoints" / "step-4").iterdir()}

    # One pod, two processes (gpu: 2 on the local node, which has no CUDA: gloo on CPU).
    apply(finetunejob("one-node", namespace, tiny_model_dir, rows_file, workdir / "node",
                      training=TRAINING, resources={"gpu": 2}))
    single = wait_final("ftj", namespace, "one-node")
    assert single["status"]["phase"] == "Succeeded", single["status"]
    assert len(_pods(namespace, "one-node")) == 1
    assert json.loads(Path(workdir / "node" / "training_summary.json").read_text())["processes"] == 2
    for key in ("trainLoss", "validationLoss", "testLoss"):
        assert status["metrics"][key] == pytest.approx(single["status"]["metrics"][key], abs=1e-3), key


def test_a_user_error_in_the_pods_fails_the_attempt_without_retry(operator, namespace, tiny_model_dir, rows_file, workdir):
    """Both ranks join, then fail in the check phase: the attempt fails with the pods' reason,
    is not retried, and every Job of the attempt is stopped."""
    apply(finetunejob("bad-nodes", namespace, tiny_model_dir, rows_file, workdir / "bad", backoffLimit=2,
                      dataset={"promptTemplate": "Shout {{ colour }}:"}, resources={"gpu": 0, "nodes": 2}))
    ftj = wait_final("ftj", namespace, "bad-nodes", timeout=180)
    status = ftj["status"]
    assert (status["phase"], status["lastFailure"]["reason"], status["lastFailure"]["class"]) == \
        ("Failed", "InvalidDataset", "user"), status
    assert status["attempt"] == 1 and status.get("retries", 0) == 0 and "colour" in status["message"]
    names = sorted(j["metadata"]["name"] for j in jobs_in(namespace))
    assert names == ["bad-nodes-train", "bad-nodes-train-w1"]
    wait_for(lambda: all(get_json("job", n, "-n", namespace)["spec"]["parallelism"] == 0 for n in names), 30,
             "every Job of the attempt to be stopped")
    assert not (workdir / "bad").exists()


def test_ranks_that_cannot_all_start_are_released_at_the_gang_timeout(operator, namespace, tiny_model_dir, rows_file, workdir):
    """1.20 has per-rank Jobs, each scheduled on its own: rank 0 takes 5 of the node's 8 CPUs and
    starts, the worker asks for 5 more and cannot be scheduled. Past spec.gang.timeoutSeconds the
    attempt lets go: its Jobs are deleted, no pod is left holding anything, and the job fails
    with RanksNotScheduled (backoffLimit 0; with retries left it would be retried like an eviction)."""
    apply(finetunejob("half", namespace, tiny_model_dir, rows_file, workdir / "half", backoffLimit=0,
                      resources={"gpu": 0, "nodes": 2, "cpu": "5"}, gang={"timeoutSeconds": 15}))
    ranks = wait_for(lambda: (ps := _pods(namespace, "half")) and len(ps) == 2 and ps, 90, "both ranks' pods")
    phases = {p["metadata"]["labels"]["kubetune.io/rank"]: p["status"].get("phase") for p in ranks}
    assert phases["1"] == "Pending", phases
    ftj = wait_final("ftj", namespace, "half", timeout=120)
    status = ftj["status"]
    assert (status["phase"], status["lastFailure"]["reason"], status["lastFailure"]["class"]) == \
        ("Failed", "RanksNotScheduled", "infrastructure"), status
    assert "1 of 2 ranks started within gang.timeoutSeconds (15 s)" in status["message"], status["message"]
    assert "rank 1: Unschedulable" in status["message"] and "Insufficient cpu" in status["message"], status["message"]
    wait_for(lambda: not jobs_in(namespace) and not _pods(namespace, "half"), 60, "the attempt's Jobs and pods to go")
    assert status["attempt"] == 1 and status.get("retries", 0) == 0
