"""Runtimes and the admin's policy on the local control plane, with the operator's policy
requireRuntime on (KUBETUNE_REQUIRE_RUNTIME, as the chart's policy.requireRuntime sets it):
kubectl apply -> the admission webhook (policy, runtime, namespaces) -> operator -> Job -> the
pod, which gets the runtime's env from a Secret, its ServiceAccount and pull secret, and a
memory /dev/shm it sees as a tmpfs."""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path

import pytest

from kubectl_utils import (STATE, apply, events_for, get_json, jobs_in, kubectl, succeeded_condition, wait_final, wait_for,
                           webhooks_off)
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster
SECRET_VALUE = "s3cr3t-from-the-runtime"


@contextlib.contextmanager
def _env(**values: str):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None) if value is None else os.environ.__setitem__(name, value)


def _refused_without_runtime(namespace: str) -> bool:
    """Whether the webhook now answers with the policy (failurePolicy Ignore admits while it cannot)."""
    body = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "probe", "namespace": namespace},
            "spec": {"model": {"path": "m"}, "dataset": {"path": "d.jsonl", "promptTemplate": "{{ a }}", "completionField": "b"},
                     "output": {"path": "o"}}}
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(body), check=False)
    return result.returncode != 0 and "requireRuntime" in result.stderr


@pytest.fixture(scope="module")
def policy_operator(operator):
    """The session's operator, restarted with runtimes required for this module, then as before."""
    operator.stop()
    with _env(KUBETUNE_REQUIRE_RUNTIME="true"):
        operator.start()
    wait_for(lambda: _refused_without_runtime("default"), 60, "the webhook to answer with the policy")
    yield operator
    operator.stop()
    operator.start()


@pytest.fixture
def cluster_runtime(namespace):
    """A ClusterTrainingRuntime for this test's namespace only: a private image with its pull
    secret, a workload ServiceAccount, env from a Secret, and /dev/shm as a memory emptyDir."""
    name = f"rt-{uuid.uuid4().hex[:8]}"
    kubectl("create", "secret", "generic", "s3-creds", "-n", namespace, f"--from-literal=secret={SECRET_VALUE}")
    kubectl("create", "secret", "docker-registry", "registry-creds", "-n", namespace, "--docker-server=registry.example",
            "--docker-username=u", "--docker-password=p")
    kubectl("create", "serviceaccount", "trainer-identity", "-n", namespace)
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "ClusterTrainingRuntime", "metadata": {"name": name}, "spec": {
        "image": "registry.example/private/trainer:0.1.0", "imagePullSecrets": [{"name": "registry-creds"}],
        "serviceAccountName": "trainer-identity", "namespaces": [namespace],
        "env": [{"name": "RUNTIME_SECRET", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret"}}},
                {"name": "RUNTIME_PLAIN", "value": "plain"}],
        "volumes": [{"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
        "resources": {"defaults": {"gpu": 0}, "max": {"gpu": 1, "nodes": 1}}}})
    yield name
    kubectl("delete", "clustertrainingruntime", name, "--ignore-not-found", check=False)


def _job(name, namespace, runtime, model, rows, workdir, **spec):
    body = finetunejob(name, namespace, model, rows, workdir / name, **spec)
    body["spec"].pop("resources")  # the runtime's defaults
    if runtime:
        body["spec"]["runtime"] = {"name": runtime}
    return body


def test_a_job_runs_with_its_runtime(policy_operator, namespace, cluster_runtime, tiny_model_dir, rows_file, workdir):
    apply(_job("shout", namespace, cluster_runtime, tiny_model_dir, rows_file, workdir))
    ftj = wait_final("ftj", namespace, "shout")
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert ftj["status"]["runtime"]["kind"] == "ClusterTrainingRuntime" and ftj["status"]["runtime"]["name"] == cluster_runtime
    assert ftj["status"]["runtime"]["digest"].startswith("sha256:")
    (job,) = jobs_in(namespace)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/private/trainer:0.1.0"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["serviceAccountName"] == "trainer-identity" and pod["automountServiceAccountToken"] is False
    assert {"name": "RUNTIME_SECRET", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret"}}} in container["env"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}} in pod["volumes"]
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {})  # the runtime's default: 0


def _process_view(namespace: str, pod_name: str, container: str = "trainer") -> dict:
    """What the container's process sees (its environment, its /dev/shm), read on the node
    (the node agent runs a container as a process; its pid file is in the pod's directory)."""
    pid_file = STATE / "pods" / namespace / pod_name / f"{container}.pid"
    try:
        pid = pid_file.read_text().split()[0]
        environ = dict(item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in item)
        mounts = [line.split() for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()]
    except (OSError, IndexError):
        return {}
    top = [m for m in mounts if m[4] == "/dev/shm"][-1:]  # the last mount there is the one seen
    if not top or "size=65536k" not in top[0][-1].split(","):  # not yet mounted: the host's /dev/shm
        return {}
    return {"env": environ, "shm": top[0][top[0].index("-") + 1], "options": top[0][-1]}


def test_the_pod_sees_the_runtimes_secret_and_a_memory_dev_shm(policy_operator, namespace, cluster_runtime, tiny_model_dir,
                                                               rows_file, workdir):
    """A long run, read while it runs, then deleted."""
    apply(_job("long", namespace, cluster_runtime, tiny_model_dir, rows_file, workdir, training={"maxSteps": 100000}))
    pod = wait_for(lambda: next(iter(get_json("pods", "-n", namespace)["items"]), None), 120, "the pod")
    view = wait_for(lambda: _process_view(namespace, pod["metadata"]["name"]), 120, "the trainer process")
    assert view["env"]["RUNTIME_SECRET"] == SECRET_VALUE and view["env"]["RUNTIME_PLAIN"] == "plain"
    assert view["shm"] == "tmpfs" and "size=65536k" in view["options"]  # the runtime's sizeLimit, 64Mi
    kubectl("delete", "ftj", "long", "-n", namespace)


@pytest.mark.parametrize("field, value, words", [
    ("image", "registry.example/other-team/private:1", "spec.image: set by the runtime only (policy requireRuntime)"),
    ("priorityClassName", "system-node-critical", "spec.priorityClassName: set by the runtime only"),
    ("tolerations", [{"operator": "Exists"}], "spec.tolerations: set by the runtime only"),
    ("runtime", None, "spec.runtime: required by the operator's policy (requireRuntime)"),
], ids=["image", "priority-class", "tolerations", "no-runtime"])
def test_with_runtimes_required_the_specs_own_placement_is_refused_at_apply(policy_operator, namespace, cluster_runtime, tiny_model_dir,
                                                                           rows_file, workdir, field, value, words):
    body = _job("mine", namespace, cluster_runtime, tiny_model_dir, rows_file, workdir)
    if value is None:
        body["spec"].pop(field)
    else:
        body["spec"][field] = value
    result = apply(body, check=False)
    assert result.returncode != 0 and "PolicyViolation" in result.stderr and words in result.stderr, result.stderr
    assert get_json("ftj", "mine", "-n", namespace) is None


def test_a_cluster_runtime_serves_the_namespaces_it_allows(policy_operator, namespace, cluster_runtime, tiny_model_dir, rows_file,
                                                          workdir):
    other = f"kt-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", other)
    try:
        allowed = apply(_job("ok", namespace, cluster_runtime, tiny_model_dir, rows_file, workdir, suspend=True), check=False)
        assert allowed.returncode == 0, allowed.stderr
        refused = apply(_job("no", other, cluster_runtime, tiny_model_dir, rows_file, workdir), check=False)
        assert refused.returncode != 0
        assert (f"RuntimeNotAllowed: spec.runtime: ClusterTrainingRuntime '{cluster_runtime}' does not allow namespace '{other}'"
                in refused.stderr), refused.stderr
        missing = apply(_job("gone", namespace, "no-such-runtime", tiny_model_dir, rows_file, workdir), check=False)
        assert "RuntimeNotFound: spec.runtime: ClusterTrainingRuntime 'no-such-runtime' does not exist" in missing.stderr
        # The admin opens the runtime to namespaces by label.
        kubectl("patch", "clustertrainingruntime", cluster_runtime, "--type=merge",
                "-p", json.dumps({"spec": {"namespaceSelector": {"matchLabels": {"kubetune.io/gpu": "yes"}}}}))
        kubectl("label", "namespace", other, "kubetune.io/gpu=yes")
        now_allowed = apply(_job("no", other, cluster_runtime, tiny_model_dir, rows_file, workdir, suspend=True), check=False)
        assert now_allowed.returncode == 0, now_allowed.stderr
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


def test_a_runtime_gone_before_launch_fails_the_job_without_a_pod(policy_operator, namespace, cluster_runtime, tiny_model_dir,
                                                                 rows_file, workdir):
    """Admitted while the runtime existed (created suspended: no pod yet); deleted before the job
    resumes: the launch reads it again and fails with RuntimeNotFound."""
    apply(_job("later", namespace, cluster_runtime, tiny_model_dir, rows_file, workdir, suspend=True))
    wait_for(lambda: (get_json("ftj", "later", "-n", namespace).get("status") or {}).get("phase") == "Suspended", 60, "suspended")
    kubectl("delete", "clustertrainingruntime", cluster_runtime)
    kubectl("patch", "ftj", "later", "-n", namespace, "--type=merge", "-p", json.dumps({"spec": {"suspend": False}}))
    ftj = wait_final("ftj", namespace, "later", timeout=60)
    condition = succeeded_condition(ftj)
    assert (ftj["status"]["phase"], condition["reason"]) == ("Failed", "RuntimeNotFound")
    assert f"ClusterTrainingRuntime '{cluster_runtime}' does not exist" in condition["message"]
    assert jobs_in(namespace) == [] and get_json("pods", "-n", namespace)["items"] == []
    assert ("Warning", "RuntimeNotFound") in events_for(namespace, "later")


def test_past_a_missing_webhook_the_operator_applies_the_policy_itself(policy_operator, namespace, tiny_model_dir, rows_file, workdir):
    with webhooks_off():
        apply(_job("sneaky", namespace, None, tiny_model_dir, rows_file, workdir, priorityClassName="system-node-critical"))
    ftj = wait_final("ftj", namespace, "sneaky", timeout=60)
    condition = succeeded_condition(ftj)
    assert (ftj["status"]["phase"], condition["reason"]) == ("Failed", "PolicyViolation")
    assert "spec.runtime: required" in condition["message"] and "spec.priorityClassName" in condition["message"]
    assert jobs_in(namespace) == []
