"""The chart's runtimes (runtimes.cpu / runtimes.nvidiaGpu) and policy (policy.*): off by
default, rendered as valid ClusterTrainingRuntimes (the same as examples/runtimes.yaml), and the
policy values reaching the operator as the environment policy.py reads."""
from __future__ import annotations

import pytest
import yaml

from conftest import ROOT, by_kind, one, rejected, render
from kubetune_api.runtimes import ClusterRuntimeSpec
from kubetune_operator.policy import Policy

KUBETUNE = "kubetune.io/v1alpha1"
BOTH = {"runtimes": {"cpu": {"enabled": True}, "nvidiaGpu": {"enabled": True}}}


def _env(objects) -> dict[str, str]:
    (container,) = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("env") or []}


def test_no_runtime_by_default():
    assert not by_kind(render(), "ClusterTrainingRuntime")


def test_the_runtimes_render_as_valid_cluster_runtimes_like_the_example():
    runtimes = {r["metadata"]["name"]: r for r in by_kind(render(BOTH, api_versions=(KUBETUNE,)), "ClusterTrainingRuntime")}
    assert set(runtimes) == {"cpu", "nvidia-gpu"}
    for runtime in runtimes.values():
        ClusterRuntimeSpec.model_validate(runtime["spec"])
        # Hooks: created after the release's CRDs exist (Helm maps all objects before creating any).
        assert runtime["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    examples = {e["metadata"]["name"]: e for e in yaml.safe_load_all((ROOT / "examples" / "runtimes.yaml").read_text())}
    assert {name: ClusterRuntimeSpec.model_validate(e["spec"]) for name, e in examples.items()} == {
        name: ClusterRuntimeSpec.model_validate(r["spec"]) for name, r in runtimes.items()}


def test_the_gpu_runtime_tolerates_gpu_nodes_and_gives_a_memory_dev_shm():
    values = {"runtimes": {"nvidiaGpu": {"enabled": True, "nodeSelector": {"nvidia.com/gpu.present": "true"}, "shmSizeLimit": "16Gi",
                                         "namespaces": ["team-a"], "image": "registry.example/trainer:2-cuda",
                                         "resources": {"defaults": {"gpu": 2}, "max": {"gpu": 4, "nodes": 2}}}}}
    (gpu,) = by_kind(render(values, api_versions=(KUBETUNE,)), "ClusterTrainingRuntime")
    spec = ClusterRuntimeSpec.model_validate(gpu["spec"])
    assert spec.image == "registry.example/trainer:2-cuda" and spec.namespaces == ["team-a"]
    assert spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.operator.value, t.effect.value) for t in spec.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    (shm,) = spec.volumes
    assert (shm.mount_path, shm.empty_dir.medium.value, shm.empty_dir.size_limit) == ("/dev/shm", "Memory", "16Gi")
    assert (spec.resources.defaults.gpu, spec.resources.max.gpu, spec.resources.max.nodes) == (2, 4, 2)


def test_the_default_policy_reaches_the_operator_as_its_safe_defaults(monkeypatch):
    env = _env(render())
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    assert Policy.from_env() == Policy()
    assert env["KUBETUNE_DENIED_PRIORITY_CLASSES"] == "system-node-critical,system-cluster-critical"
    assert env["KUBETUNE_ALLOW_KEYLESS_TOLERATIONS"] == "false" and env["KUBETUNE_REQUIRE_RUNTIME"] == "false"


def test_policy_values_become_the_operators_policy(monkeypatch):
    values = {"policy": {"requireRuntime": True, "deniedPriorityClasses": ["system-node-critical"],
                         "allowed": {"imagePrefixes": ["registry.example/a/", "registry.example/b/"], "priorityClasses": ["batch"],
                                     "tolerationKeys": ["nvidia.com/gpu"], "keylessTolerations": True, "nodeSelectorKeys": ["pool"],
                                     "uidRange": {"min": 1000, "max": 65535}, "maxGpusPerPod": 8}},
              "extraEnv": [{"name": "EXTRA", "value": "1"}]}
    env = _env(render(values))
    assert env["EXTRA"] == "1"  # extraEnv still added
    for name, value in env.items():
        monkeypatch.setenv(name, value or "")
    assert Policy.from_env() == Policy(require_runtime=True, image_prefixes=("registry.example/a/", "registry.example/b/"),
                                       priority_classes=("batch",), denied_priority_classes=("system-node-critical",),
                                       toleration_keys=("nvidia.com/gpu",), keyless_tolerations=True, node_selector_keys=("pool",),
                                       uid_min=1000, uid_max=65535, max_gpus=8)


@pytest.mark.parametrize("values, field", [
    ({"policy": {"requireRuntime": "yes"}}, "/policy/requireRuntime"),
    ({"policy": {"allowed": {"imagePrefix": []}}}, "imagePrefix"),
    ({"policy": {"allowed": {"uidRange": {"min": 0}}}}, "/policy/allowed/uidRange/min"),
    ({"runtimes": {"nvidiaGpu": {"enabeld": True}}}, "enabeld"),
    ({"runtimes": {"cpu": {"resources": {"max": {"gpu": -1}}}}}, "/runtimes/cpu/resources/max/gpu"),
], ids=["bool", "typo", "uid-zero", "runtime-typo", "negative-gpu"])
def test_policy_and_runtime_values_outside_the_schema_fail_with_the_field_named(values, field):
    error = rejected(values)
    assert "schema" in error and field in error, error
