"""Container env building: $(VAR) expansion, downward API refs, configMap/secret keys."""
from __future__ import annotations

import base64

import pytest

from node_agent.common import NODE_RESOURCES, NotReady, Unsupported
from node_agent.env import PodFacts, base_env, declared_env, expand, keys_lookup


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


OBJECTS = {
    ("configmaps", "cm"): {"data": {"A": "from-cm", "B": "b", "bad key": "x"}},
    ("secrets", "sec"): {"data": {"PASSWORD": b64("s3cret"), "A": b64("from-secret")}},
}


def lookup():
    return keys_lookup(lambda plural, name: OBJECTS.get((plural, name)))


@pytest.fixture
def env_of(make_pod):
    """declared_env of a container, in a pod of its own unless one is given."""
    def env_of(container: dict, pod: dict | None = None) -> dict:
        pod = pod or make_pod(containers=[container])
        return declared_env(container, PodFacts(pod, "node-1", "127.0.0.7"), lookup())
    return env_of


# -- $(VAR) expansion ----------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("$(A)-$(B)", "1-2"),
    ("$(MISSING)", "$(MISSING)"),         # undefined: left verbatim
    ("$$(A)", "$(A)"),                   # $$ escapes
    ("cost $$5", "cost $5"),
    ("$(A", "$(A"),                      # unterminated
    ("trailing $", "trailing $"),
    ("$A $(A)", "$A 1"),                 # only the $(...) form expands
    ("", ""),
])
def test_expand(text, expected):
    assert expand(text, {"A": "1", "B": "2"}) == expected


def test_env_values_expand_earlier_vars_in_order(env_of):
    c = {"name": "main", "env": [
        {"name": "A", "value": "one"},
        {"name": "B", "value": "$(A)-two-$(C)"},   # C is defined later: stays verbatim
        {"name": "C", "value": "three"},
        {"name": "EMPTY"},
    ]}
    assert env_of(c) == {"A": "one", "B": "one-two-$(C)", "C": "three", "EMPTY": ""}


# -- fieldRef --------------------------------------------------------------------------
@pytest.mark.parametrize("path, expected", [
    ("metadata.name", "p"),
    ("metadata.namespace", "ns"),
    ("metadata.uid", "uid-1"),
    ("spec.nodeName", "node-1"),
    ("spec.serviceAccountName", "default"),
    ("status.podIP", "127.0.0.7"),
    ("status.podIPs", "127.0.0.7"),
    ("status.hostIP", "127.0.0.1"),
    ("metadata.labels['app']", "x"),
    ("metadata.labels['nope']", ""),
    ("metadata.annotations['note']", "hi"),
    ("metadata.labels", 'app="x"\ntier="a b"'),
])
def test_field_ref(path, expected, env_of):
    c = {"name": "main", "env": [{"name": "V", "valueFrom": {"fieldRef": {"fieldPath": path}}}]}
    assert env_of(c)["V"] == expected


def test_field_ref_service_account_and_missing_ip(make_pod):
    pod = make_pod(serviceAccountName="trainer")
    facts = PodFacts(pod, "node-1", None)
    assert facts.field("spec.serviceAccountName") == "trainer"
    assert facts.field("status.podIP") == ""


def test_unknown_field_ref_is_unsupported(make_pod):
    with pytest.raises(Unsupported, match="spec.priority"):
        PodFacts(make_pod(), "n").field("spec.priority")


# -- resourceFieldRef ----------------------------------------------------------------------
@pytest.fixture
def resource_env(env_of):
    """The env value of one resourceFieldRef in a container with `resources`."""
    def resource_env(ref: dict, resources: dict | None = None) -> str:
        c = {"name": "main", "resources": resources or {},
             "env": [{"name": "R", "valueFrom": {"resourceFieldRef": ref}}]}
        return env_of(c)["R"]
    return resource_env


def test_resource_ref_reads_the_container_and_rounds_up(resource_env):
    res = {"limits": {"cpu": "1500m", "memory": "1Gi"}, "requests": {"cpu": "250m"}}
    assert resource_env({"resource": "limits.cpu"}, res) == "2"
    assert resource_env({"resource": "requests.cpu", "divisor": "1m"}, res) == "250"
    assert resource_env({"resource": "requests.cpu"}, res) == "1"
    assert resource_env({"resource": "limits.memory", "divisor": "1Mi"}, res) == "1024"


def test_resource_ref_defaults_limits_to_node_and_requests_to_zero(resource_env):
    assert resource_env({"resource": "limits.cpu"}) == NODE_RESOURCES["cpu"]
    assert resource_env({"resource": "limits.nvidia.com/gpu"}) == NODE_RESOURCES["nvidia.com/gpu"]
    assert resource_env({"resource": "requests.memory"}) == "0"


def test_resource_ref_by_container_name(env_of, make_pod):
    other = {"name": "side", "command": ["x"], "resources": {"limits": {"memory": "2Gi"}}}
    main = {"name": "main", "env": [{"name": "R", "valueFrom": {"resourceFieldRef": {
        "containerName": "side", "resource": "limits.memory", "divisor": "1Gi"}}}]}
    assert env_of(main, make_pod(containers=[main, other]))["R"] == "2"


# -- configMap / secret keys -----------------------------------------------------------------
def test_config_map_and_secret_key_refs(env_of):
    c = {"name": "main", "env": [
        {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "A"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "PASSWORD"}}},
    ]}
    assert env_of(c) == {"FROM_CM": "from-cm", "PW": "s3cret"}


def test_missing_key_fails_unless_optional(env_of):
    ref = {"name": "cm", "key": "NOPE"}
    c = {"name": "main", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": ref}}]}
    with pytest.raises(NotReady, match="couldn't find key NOPE in configmap ns/cm") as e:
        env_of(c)
    assert e.value.reason == "CreateContainerConfigError"
    ref["optional"] = True
    assert env_of(c) == {}


def test_missing_object_fails_unless_optional(env_of):
    ref = {"name": "gone", "key": "K"}
    c = {"name": "main", "env": [{"name": "X", "valueFrom": {"secretKeyRef": ref}}]}
    with pytest.raises(NotReady, match='secret "gone" not found'):
        env_of(c)
    ref["optional"] = True
    assert env_of(c) == {}


def test_env_from_with_prefix_skips_invalid_names_and_env_overrides(env_of):
    c = {"name": "main",
         "envFrom": [{"configMapRef": {"name": "cm"}},
                     {"secretRef": {"name": "sec"}, "prefix": "S_"},
                     {"configMapRef": {"name": "absent", "optional": True}}],
         "env": [{"name": "B", "value": "explicit $(A)"}]}
    assert env_of(c) == {"A": "from-cm", "B": "explicit from-cm", "S_PASSWORD": "s3cret",
                         "S_A": "from-secret"}


def test_env_from_missing_object_is_not_ready(env_of):
    c = {"name": "main", "envFrom": [{"configMapRef": {"name": "absent"}}]}
    with pytest.raises(NotReady, match='configmap "absent" not found'):
        env_of(c)


# -- the base environment ----------------------------------------------------------------------
def test_base_env_drops_cluster_access_and_sets_hostname(monkeypatch):
    monkeypatch.setenv("KUBECONFIG", "/admin")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "x")
    monkeypatch.setenv("KEEP_ME", "1")
    env = base_env("my-pod")
    assert "KUBECONFIG" not in env and "KUBERNETES_SERVICE_HOST" not in env
    assert env["KEEP_ME"] == "1" and env["HOSTNAME"] == "my-pod"
    import sys
    from pathlib import Path
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
