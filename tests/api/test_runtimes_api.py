"""ClusterTrainingRuntime and TrainingRuntime: the models refuse what would break a pod or take
the operator's names, and the generated CRDs read well in kubectl (scope, short names, columns,
a description on every field, keys a 1.20 API server knows)."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from crd_schema import walk
from kubetune_api import crdgen
from kubetune_api.resources import FineTuneJobSpec
from kubetune_api.runtimes import ClusterRuntimeSpec, RuntimeSpec

CRDS = {"clustertrainingruntimes.kubetune.io.yaml": ("Cluster", "ctrt", "ClusterTrainingRuntime"),
        "trainingruntimes.kubetune.io.yaml": ("Namespaced", "trt", "TrainingRuntime")}


@pytest.mark.parametrize("name", sorted(CRDS))
def test_runtime_crds_scope_names_and_columns(name):
    scope, short, kind = CRDS[name]
    crd = yaml.safe_load(crdgen.rendered()[name])
    assert crd["spec"]["scope"] == scope and crd["spec"]["names"]["kind"] == kind
    assert crd["spec"]["names"]["shortNames"] == [short] and crd["spec"]["names"]["categories"] == ["kubetune"]
    version = crd["spec"]["versions"][0]
    assert "subresources" not in version and "status" not in version["schema"]["openAPIV3Schema"]["properties"]
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == ["Image", "GPU", "Max GPU", "Age"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, node in walk(spec, "spec"):
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node, f"{path} has no type"
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description for kubectl explain"
    assert ("namespaces" in spec["properties"]) == (scope == "Cluster")
    assert spec["properties"]["volumes"]["items"]["properties"]["emptyDir"]["properties"]["medium"]["enum"] == ["", "Memory"]


def test_jobs_name_a_runtime_in_their_spec():
    runtime = crdgen.schema_of(FineTuneJobSpec)["properties"]["runtime"]
    assert runtime["properties"]["kind"]["enum"] == ["ClusterTrainingRuntime", "TrainingRuntime"]
    assert runtime["properties"]["kind"]["default"] == "ClusterTrainingRuntime" and runtime["required"] == ["name"]
    # No schema default on what a runtime may set instead: unset must stay unset to be the runtime's.
    props = crdgen.schema_of(FineTuneJobSpec)["properties"]
    for field in ("imagePullPolicy", "securityContext"):
        assert "default" not in props[field], field
    assert "default" not in props["resources"]["properties"]["gpu"]


@pytest.mark.parametrize("spec, words", [
    ({"env": [{"name": "KUBETUNE_WRITABLE_ROOTS", "value": "/"}]}, "KUBETUNE_WRITABLE_ROOTS"),
    ({"env": [{"name": "HF_HOME", "value": "/x"}]}, "HF_HOME"),
    ({"env": [{"name": "POD_NAME", "value": "x"}]}, "POD_NAME"),
    ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "repeated or reserved: A"),
    ({"env": [{"name": "HF_TOKEN", "value": "x"}], "hub": {"tokenSecret": {"name": "hf"}}}, "HF_TOKEN"),
    ({"env": [{"name": "A"}]}, "set exactly one of value and valueFrom"),
    ({"env": [{"name": "A", "valueFrom": {}}]}, "set exactly one of secretKeyRef and configMapKeyRef"),
    ({"env": [{"name": "1BAD", "value": "x"}]}, "name"),
    ({"envFrom": [{"secretRef": {"name": "a"}, "configMapRef": {"name": "b"}}]}, "exactly one of secretRef and configMapRef"),
    ({"volumes": [{"name": "x", "mountPath": "/x"}]}, "exactly one of persistentVolumeClaim, secret, configMap and emptyDir"),
    ({"volumes": [{"name": "x", "mountPath": "/x", "emptyDir": {}, "secret": {"secretName": "s"}}]}, "exactly one"),
    ({"volumes": [{"name": "config", "mountPath": "/x", "emptyDir": {}}]}, "repeated or reserved: config"),
    ({"volumes": [{"name": "kubetune-model-cache", "mountPath": "/x", "emptyDir": {}}]}, "kubetune-model-cache"),
    ({"volumes": [{"name": "x", "mountPath": "/etc/kubetune", "emptyDir": {}}]}, "clashing: /etc/kubetune"),
    ({"volumes": [{"name": "x", "mountPath": "/m", "emptyDir": {}}], "modelCache": {"claimName": "c", "mountPath": "/m/"}}, "clashing: /m"),
    ({"volumes": [{"name": "x", "mountPath": "/dev/shm", "emptyDir": {"medium": "HugePages"}}]}, "medium"),
    ({"volumes": [{"name": "x", "mountPath": "a:b", "emptyDir": {}}]}, "mountPath"),
    ({"hub": {"endpoint": "ftp://mirror"}}, "endpoint"),
    ({"resources": {"max": {"gpu": 65}}}, "gpu"),
    ({"resources": {"defaults": {"memory": "-1Gi"}}}, "memory"),
    ({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}}, "nodeSelectorTerms"),
    ({"imagePullSecrets": [{"name": "Not_A_Name"}]}, "name"),
    ({"podTemplate": {}}, "podTemplate"),
], ids=lambda v: str(v)[:40] if isinstance(v, str) else None)
def test_a_runtime_refuses_what_would_break_the_pod(spec, words):
    with pytest.raises(ValidationError) as refused:
        RuntimeSpec.model_validate(spec)
    assert words in str(refused.value), str(refused.value)


def test_namespaces_belong_to_cluster_runtimes_only():
    with pytest.raises(ValidationError):
        RuntimeSpec.model_validate({"namespaces": ["team-a"]})
    runtime = ClusterRuntimeSpec.model_validate({"namespaces": ["team-a"], "namespaceSelector": {"matchLabels": {"gpu": "yes"}}})
    assert runtime.allows("team-a", {}) and runtime.allows("team-b", {"gpu": "yes"}) and not runtime.allows("team-b", {"gpu": "no"})
    assert ClusterRuntimeSpec().allows("anyone", {})


def test_a_full_runtime_round_trips():
    spec = {"image": "r/t:1", "imagePullPolicy": "Always", "imagePullSecrets": [{"name": "creds"}], "serviceAccountName": "sa",
            "nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "priorityClassName": "p", "schedulerName": "s", "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}],
            "envFrom": [{"secretRef": {"name": "s"}, "prefix": "S_"}],
            "volumes": [{"name": "dshm", "mountPath": "/dev/shm", "readOnly": False, "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
            "modelCache": {"claimName": "hub", "mountPath": "/cache"}, "hub": {"endpoint": "https://m.example", "tokenSecret": {"name": "hf", "key": "t"}},
            "resources": {"defaults": {"gpu": 1, "cpu": "4", "memory": "16Gi"}, "max": {"gpu": 8, "nodes": 4, "cpu": "64", "memory": "512Gi"}}}
    parsed = RuntimeSpec.model_validate(spec)
    assert parsed.model_dump(by_alias=True, mode="json", exclude_none=True, exclude_defaults=True)["hub"] == spec["hub"]
    assert parsed.env_names() == ["A", "HF_ENDPOINT", "HF_TOKEN"]
    assert parsed.mount_paths() == ["/dev/shm", "/cache"]
