"""A job's runtime: found or RuntimeNotFound, its namespaces or RuntimeNotAllowed (both at apply,
through the webhook's check, and at launch), and what it puts into every pod the job runs:
trainer, workers of a multi-node attempt, evaluation EvalJobs and the promotion pod."""
from __future__ import annotations

from typing import Any

import kopf
import pytest

import kubetune_api as api
from kubetune_api.errors import Reason
from kubetune_operator import admission, builders, multinode, preflight, runtimes, shared
from kubetune_operator.policy import Policy
from kubetune_operator.settings import OperatorSettings

GPU_RUNTIME = {
    "image": "registry.example/private/trainer:1-cuda",
    "imagePullSecrets": [{"name": "registry-creds"}],
    "serviceAccountName": "trainer-identity",
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "gpu-type", "operator": "In", "values": ["a100", "h100"]}]}]}}},
    "priorityClassName": "training",
    "schedulerName": "volcano",
    "env": [{"name": "AWS_REGION", "value": "eu-west-1"},
            {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret"}}}],
    "envFrom": [{"configMapRef": {"name": "team-settings"}}],
    "volumes": [{"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}},
                {"name": "certs", "mountPath": "/etc/ssl/corp", "secret": {"secretName": "corp-ca"}}],
    "modelCache": {"claimName": "hub-cache"},
    "hub": {"endpoint": "https://hub.mirror.example", "tokenSecret": {"name": "hf"}},
    "resources": {"defaults": {"gpu": 2}},
}


def _store(*objects: tuple[str, str, str, dict[str, Any]]):
    """read_runtime over (kind, namespace, name, spec) entries, as the API server answers."""
    found = {(kind, namespace if kind == "TrainingRuntime" else "", name): {"metadata": {"name": name, "generation": 2}, "spec": spec}
             for kind, namespace, name, spec in objects}
    return lambda kind, namespace, name: found.get((kind, namespace if kind == "TrainingRuntime" else "", name))


def _resolve(spec_dict, ref, read, namespace="team-a", labels=None):
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "runtime": ref})
    return runtimes.resolve(spec, namespace, Policy(), read, lambda ns: dict(labels or {}))


def test_a_missing_runtime_is_named(spec_dict):
    with pytest.raises(preflight.Invalid) as refused:
        _resolve(spec_dict, {"name": "gpu"}, _store())
    assert refused.value.reason == Reason.RuntimeNotFound
    assert str(refused.value) == "spec.runtime: ClusterTrainingRuntime 'gpu' does not exist"
    with pytest.raises(preflight.Invalid) as refused:
        _resolve(spec_dict, {"kind": "TrainingRuntime", "name": "gpu"}, _store(("TrainingRuntime", "team-b", "gpu", {})))
    assert str(refused.value) == "spec.runtime: TrainingRuntime 'gpu' does not exist in namespace 'team-a'"


@pytest.mark.parametrize("allowed, namespace, labels, ok", [
    ({}, "anyone", {}, True),
    ({"namespaces": ["team-a"]}, "team-a", {}, True),
    ({"namespaces": ["team-a"]}, "team-b", {}, False),
    ({"namespaceSelector": {"matchLabels": {"gpu": "yes"}}}, "team-b", {"gpu": "yes", "x": "1"}, True),
    ({"namespaceSelector": {"matchLabels": {"gpu": "yes"}}}, "team-b", {"gpu": "no"}, False),
    ({"namespaces": ["team-a"], "namespaceSelector": {"matchLabels": {"gpu": "yes"}}}, "team-c", {"gpu": "yes"}, True),
], ids=["all", "listed", "not-listed", "labelled", "not-labelled", "either"])
def test_a_cluster_runtime_allows_the_namespaces_it_names(spec_dict, allowed, namespace, labels, ok):
    read = _store(("ClusterTrainingRuntime", "", "gpu", allowed))
    if ok:
        assert _resolve(spec_dict, {"name": "gpu"}, read, namespace, labels).record()["name"] == "gpu"
        return
    with pytest.raises(preflight.Invalid) as refused:
        _resolve(spec_dict, {"name": "gpu"}, read, namespace, labels)
    assert refused.value.reason == Reason.RuntimeNotAllowed
    assert f"spec.runtime: ClusterTrainingRuntime 'gpu' does not allow namespace '{namespace}' (it allows " in str(refused.value)


def test_a_namespaced_runtime_serves_its_own_namespace_only(spec_dict):
    read = _store(("TrainingRuntime", "team-a", "mine", {"image": "a:1"}))
    resolved = _resolve(spec_dict, {"kind": "TrainingRuntime", "name": "mine"}, read, "team-a")
    assert resolved.spec.image == "a:1" and resolved.record() == {
        "kind": "TrainingRuntime", "name": "mine", "generation": 2, "digest": runtimes.digest({"image": "a:1"})}
    with pytest.raises(preflight.Invalid):
        _resolve(spec_dict, {"kind": "TrainingRuntime", "name": "mine"}, read, "team-b")


def test_the_digest_changes_with_the_runtimes_spec():
    assert runtimes.digest({"image": "a:1"}) == runtimes.digest({"image": "a:1"}) != runtimes.digest({"image": "a:2"})


def test_the_webhook_refuses_a_missing_or_disallowed_runtime(spec_dict, monkeypatch):
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(policy=Policy()))
    spec = {**spec_dict, "runtime": {"name": "gpu"}}
    with pytest.raises(kopf.AdmissionError) as refused:
        admission.check_runtime("FineTuneJob", "team-a", spec, _store(), lambda ns: {})
    assert str(refused.value) == "RuntimeNotFound: spec.runtime: ClusterTrainingRuntime 'gpu' does not exist"
    with pytest.raises(kopf.AdmissionError) as refused:
        admission.check_runtime("FineTuneJob", "team-b", spec, _store(("ClusterTrainingRuntime", "", "gpu", {"namespaces": ["team-a"]})),
                                lambda ns: {})
    assert str(refused.value).startswith("RuntimeNotAllowed: ")
    admission.check_runtime("FineTuneJob", "team-a", spec, _store(("ClusterTrainingRuntime", "", "gpu", {"namespaces": ["team-a"]})),
                            lambda ns: {})


def _gpu_job(meta, spec_dict, **placement):
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "runtime": {"name": "gpu"}, **placement})
    resolved = runtimes.resolve(spec, meta["namespace"], Policy(), _store(("ClusterTrainingRuntime", "", "gpu", GPU_RUNTIME)), lambda ns: {})
    return spec, resolved, builders.job(meta, builders.FINETUNE, spec, runtime=resolved.spec)


def test_the_runtime_shapes_the_trainer_pod(meta, spec_dict):
    _, _, job = _gpu_job(meta, spec_dict)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/private/trainer:1-cuda"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["serviceAccountName"] == "trainer-identity"
    assert pod["automountServiceAccountToken"] is False  # a workload identity needs no Kubernetes API token
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["affinity"] == GPU_RUNTIME["affinity"]
    assert (pod["priorityClassName"], pod["schedulerName"]) == ("training", "volcano")
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_REGION"] == {"name": "AWS_REGION", "value": "eu-west-1"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "s3-creds", "key": "secret"}}
    assert env["HF_ENDPOINT"]["value"] == "https://hub.mirror.example"
    assert env["HF_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    assert env["KUBETUNE_MODEL_CACHE"]["value"] == "/var/cache/kubetune/models"
    assert container["envFrom"] == [{"configMapRef": {"name": "team-settings"}}]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert volumes["certs"]["secret"] == {"secretName": "corp-ca"}
    assert volumes["kubetune-model-cache"]["persistentVolumeClaim"] == {"claimName": "hub-cache"}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/ssl/corp"]["readOnly"] is True and mounts["/dev/shm"]["readOnly"] is False
    assert mounts["/var/cache/kubetune/models"]["name"] == "kubetune-model-cache"
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}  # the runtime's default
    assert container["command"][:4] == ["accelerate", "launch", "--multi_gpu", "--num_processes"]
    # The operator's own security stays: non-root, restricted, read-only root.
    assert pod["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["readOnlyRootFilesystem"] is True


def test_workers_of_a_multinode_attempt_get_the_runtime_too(meta, spec_dict):
    _, _, main = _gpu_job(meta, spec_dict, resources={"nodes": 2})
    worker = multinode.worker_job(main, 1, "10.0.0.5")["spec"]["template"]["spec"]
    assert worker["serviceAccountName"] == "trainer-identity" and worker["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert "HF_TOKEN" in {e["name"] for e in worker["containers"][0]["env"]}


def test_evaluation_evaljobs_inherit_the_runtime(meta, spec_dict):
    spec_dict["evaluation"] = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}
    spec, _, _ = _gpu_job(meta, spec_dict)
    (evaljob,) = builders.evaluation_jobs(meta, spec)
    assert evaljob["spec"]["runtime"] == {"kind": "ClusterTrainingRuntime", "name": "gpu"}
    assert "gpu" not in evaljob["spec"]["resources"]  # the runtime's default, of which an EvalJob takes one
    child = api.EvalJobSpec.model_validate(evaljob["spec"])
    resolved = runtimes.resolve(child, meta["namespace"], Policy(), _store(("ClusterTrainingRuntime", "", "gpu", GPU_RUNTIME)),
                                lambda ns: {}, eval_job=True)
    pod = builders.job(meta, builders.EVAL, child, runtime=resolved.spec)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert pod["serviceAccountName"] == "trainer-identity"


def test_the_promotion_pod_uses_the_runtime_without_gpus(meta, spec_dict):
    spec, resolved, _ = _gpu_job(meta, spec_dict)
    config = builders.promote_config(meta, spec.model_copy(update={"promotion": api.resources.PromotionSpec(destination="s3://b/m")}), {}, [])
    _, job = builders.promotion_children(meta, spec, config, runtime=resolved.spec)
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example/private/trainer:1-cuda"
    assert pod["containers"][0]["resources"] == {}  # gpu 0, no cpu/memory defaults in this runtime
    assert "AWS_SECRET_ACCESS_KEY" in {e["name"] for e in pod["containers"][0]["env"]}
