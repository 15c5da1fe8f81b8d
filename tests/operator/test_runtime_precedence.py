"""The precedence table of docs/runtimes.md, row by row: for each field, what the pod gets when
the runtime sets it, the spec sets it, both do, or neither does. Through runtimes.resolve (the
webhook's and the operator's check, with the runtime looked up from a dict) and builders.job
(the pod); a "refused" cell is a RuntimeConflict naming the field and the runtime."""
from __future__ import annotations

from typing import Any

import pytest

import kubetune_api as api
from kubetune_api.errors import Reason
from kubetune_operator import builders, preflight, runtimes
from kubetune_operator.policy import Policy

NAMESPACE = "team-a"


def _lookup(runtime_spec: dict[str, Any], kind: str = "ClusterTrainingRuntime", name: str = "gpu"):
    stored = {(kind, name): {"metadata": {"name": name, "generation": 3}, "spec": runtime_spec}}
    return lambda k, namespace, n: stored.get((k, n))


def _pod(spec_dict: dict[str, Any], runtime_spec: dict[str, Any], meta: dict[str, Any], default_image: str = "operator/default:1"):
    """(pod spec, trainer container) of the Job the operator would launch, or Invalid."""
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "runtime": {"name": "gpu"}})
    resolved = runtimes.resolve(spec, NAMESPACE, Policy(), _lookup(runtime_spec), lambda ns: {})
    pod = builders.job(meta, builders.FINETUNE, spec, default_image, runtime=resolved.spec)["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


# field, (runtime's value, spec's value), where the pod shows it, (runtime only, spec only, neither).
ROWS = [
    ("image", ("registry.example/gpu:1", "registry.example/mine:2"), lambda pod, c: c["image"],
     ("registry.example/gpu:1", "registry.example/mine:2", "operator/default:1")),
    ("imagePullPolicy", ("Always", "Never"), lambda pod, c: c["imagePullPolicy"], ("Always", "Never", "IfNotPresent")),
    ("nodeSelector", ({"pool": "gpu"}, {"pool": "mine"}), lambda pod, c: pod.get("nodeSelector"),
     ({"pool": "gpu"}, {"pool": "mine"}, None)),
    ("tolerations", ([{"key": "nvidia.com/gpu", "operator": "Exists"}], [{"key": "dedicated", "value": "me"}]),
     lambda pod, c: pod.get("tolerations"),
     ([{"key": "nvidia.com/gpu", "operator": "Exists"}], [{"key": "dedicated", "operator": "Equal", "value": "me"}], None)),
    ("priorityClassName", ("batch-high", "mine"), lambda pod, c: pod.get("priorityClassName"), ("batch-high", "mine", None)),
    ("securityContext", ({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}, {"runAsUser": 2000, "runAsGroup": 2000, "fsGroup": 2000}),
     lambda pod, c: pod["securityContext"]["runAsUser"], (1000, 2000, 65532)),
]


@pytest.mark.parametrize("field, values, shown, expected", ROWS, ids=[row[0] for row in ROWS])
def test_a_field_is_the_runtimes_or_the_specs_never_both(meta, spec_dict, field, values, shown, expected):
    runtime_value, spec_value = values
    from_runtime, from_spec, default = expected
    assert shown(*_pod(spec_dict, {field: runtime_value}, meta)) == from_runtime
    assert shown(*_pod({**spec_dict, field: spec_value}, {}, meta)) == from_spec
    assert shown(*_pod(spec_dict, {}, meta)) == default
    with pytest.raises(preflight.Invalid) as refused:
        _pod({**spec_dict, field: spec_value}, {field: runtime_value}, meta)
    assert refused.value.reason == Reason.RuntimeConflict
    assert f"spec.{field}: set by ClusterTrainingRuntime 'gpu'" in str(refused.value)


# Resources: the spec's, else the runtime's defaults, else the operator's (1 GPU); then max.
@pytest.mark.parametrize("spec_resources, defaults, limits", [
    ({}, {}, {"nvidia.com/gpu": "1"}),
    ({}, {"gpu": 2, "cpu": "4", "memory": "16Gi"}, {"nvidia.com/gpu": "2", "cpu": "4", "memory": "16Gi"}),
    ({"gpu": 0, "memory": "8Gi"}, {"gpu": 2, "cpu": "4", "memory": "16Gi"}, {"cpu": "4", "memory": "8Gi"}),
    ({"gpu": 4, "cpu": "2"}, {"gpu": 1}, {"nvidia.com/gpu": "4", "cpu": "2"}),
], ids=["operator-default", "runtime-defaults", "spec-over-defaults", "spec-only"])
def test_resources_are_the_specs_else_the_runtimes_defaults(meta, spec_dict, spec_resources, defaults, limits):
    pod, container = _pod({**spec_dict, "resources": spec_resources}, {"resources": {"defaults": defaults}}, meta)
    assert container["resources"]["limits"] == limits == container["resources"]["requests"]


@pytest.mark.parametrize("spec_resources, limit, words", [
    ({"gpu": 3}, {"gpu": 2}, "spec.resources.gpu: 3 is above ClusterTrainingRuntime 'gpu''s resources.max.gpu (2 per pod)"),
    ({}, {"gpu": 0}, "spec.resources.gpu: 1 is above"),  # the operator's default of 1 GPU counts too
    ({"nodes": 4}, {"nodes": 2}, "spec.resources.nodes: 4 is above ClusterTrainingRuntime 'gpu''s resources.max.nodes (2 per job)"),
    ({"cpu": "4500m"}, {"cpu": "4"}, "spec.resources.cpu: 4500m is above"),
    ({"memory": "17Gi"}, {"memory": "16Gi"}, "spec.resources.memory: 17Gi is above"),
    ({}, {"memory": "16Gi"}, "spec.resources.memory: unset (no limit)"),
], ids=["gpu", "default-gpu", "nodes", "cpu", "memory", "memory-unset"])
def test_resources_above_the_runtimes_max_are_refused(meta, spec_dict, spec_resources, limit, words):
    with pytest.raises(preflight.Invalid) as refused:
        _pod({**spec_dict, "resources": spec_resources}, {"resources": {"max": limit}}, meta)
    assert refused.value.reason == Reason.PolicyViolation and words in str(refused.value), str(refused.value)


def test_resources_within_the_max_pass(meta, spec_dict):
    pod, container = _pod({**spec_dict, "resources": {"gpu": 2, "cpu": "3.5", "memory": "16384Mi"}},
                          {"resources": {"max": {"gpu": 2, "cpu": "4", "memory": "16Gi"}}}, meta)
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "3.5", "memory": "16384Mi"}


def test_an_evaljob_takes_at_most_one_of_the_runtimes_default_gpus(meta):
    spec = api.EvalJobSpec.model_validate({"models": [{"name": "base", "path": "/m"}], "runtime": {"name": "gpu"},
                                           "dataset": {"path": "d.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
                                           "output": {"path": "o"}})
    resolved = runtimes.resolve(spec, NAMESPACE, Policy(), _lookup({"resources": {"defaults": {"gpu": 4}, "max": {"gpu": 4}}}),
                                lambda ns: {}, eval_job=True)
    container = builders.job(meta, builders.EVAL, spec, runtime=resolved.spec)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_env_and_volumes_are_added_to_the_operators_own(meta, spec_dict):
    spec_dict["volumes"] = [{"name": "data", "claimName": "datasets", "mountPath": "/data"}]
    pod, container = _pod(spec_dict, {"env": [{"name": "WANDB_MODE", "value": "offline"}],
                                      "volumes": [{"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory"}}]}, meta)
    names = [e["name"] for e in container["env"]]
    assert names[:2] == ["KUBETUNE_TERMINATION_LOG", "KUBETUNE_WRITABLE_ROOTS"] and names[-1] == "WANDB_MODE"
    assert len(names) == len(set(names))
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert {"/etc/kubetune": "config", "/data": "data", "/dev/shm": "dshm", "/tmp": "kubetune-tmp"}.items() <= mounts.items()
    assert {"name": "dshm", "emptyDir": {"medium": "Memory"}} in pod["volumes"]
    # The runtime's volumes are no output location: only the spec's writable volumes are.
    assert {"name": "KUBETUNE_WRITABLE_ROOTS", "value": "/data"} in container["env"]


@pytest.mark.parametrize("volume, field", [
    ({"name": "dshm", "claimName": "mine", "mountPath": "/mnt/x"}, "spec.volumes[dshm].name"),
    ({"name": "mine", "claimName": "mine", "mountPath": "/dev/shm/"}, "spec.volumes[mine].mountPath"),
    ({"name": "mine", "claimName": "mine", "mountPath": "/var/cache/kubetune/models"}, "spec.volumes[mine].mountPath"),
], ids=["name", "path", "model-cache-path"])
def test_a_spec_volume_on_a_runtime_volumes_name_or_path_is_refused(meta, spec_dict, volume, field):
    runtime = {"volumes": [{"name": "dshm", "mountPath": "/dev/shm", "emptyDir": {"medium": "Memory"}}],
               "modelCache": {"claimName": "hub-cache"}}
    with pytest.raises(preflight.Invalid) as refused:
        _pod({**spec_dict, "volumes": [volume]}, runtime, meta)
    assert refused.value.reason == Reason.RuntimeConflict and field in str(refused.value), str(refused.value)
