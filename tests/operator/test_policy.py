"""The admin's policy as a pure decision: what a spec may set itself, each refusal naming the
rule; the environment the chart's policy.* values become; and the webhook refusing at apply."""
from __future__ import annotations

import kopf
import pytest

import kubetune_api as api
from kubetune_api.errors import Reason
from kubetune_operator import admission, preflight, runtimes, shared
from kubetune_operator.policy import Policy, violations
from kubetune_operator.settings import OperatorSettings


def _spec(spec_dict, **placement) -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({**spec_dict, **placement})


REQUIRED = Policy(require_runtime=True)


def test_require_runtime_refuses_a_job_without_one(spec_dict):
    (message,) = violations(_spec(spec_dict), REQUIRED)
    assert message.startswith("spec.runtime: required by the operator's policy (requireRuntime)")
    assert violations(_spec(spec_dict, runtime={"name": "cpu"}), REQUIRED) == []


@pytest.mark.parametrize("field, value", [
    ("image", "registry.example/other-team/private:1"),
    ("imagePullPolicy", "Never"),
    ("priorityClassName", "system-node-critical"),
    ("tolerations", [{"operator": "Exists"}]),
    ("nodeSelector", {"pool": "gpu"}),
    ("securityContext", {"runAsUser": 1000}),
])
def test_require_runtime_leaves_image_and_placement_to_the_runtime(spec_dict, field, value):
    found = violations(_spec(spec_dict, runtime={"name": "cpu"}, **{field: value}), REQUIRED)
    assert found == [f"spec.{field}: set by the runtime only (policy requireRuntime)"]


# The tenant: each of these was admitted and copied into the pod.
@pytest.mark.parametrize("placement, policy, words", [
    ({"priorityClassName": "system-node-critical"}, Policy(), "spec.priorityClassName: 'system-node-critical' is denied"),
    ({"priorityClassName": "system-cluster-critical"}, Policy(), "policy deniedPriorityClasses"),
    ({"priorityClassName": "batch-low"}, Policy(priority_classes=("batch-high",)), "policy allowed.priorityClasses: batch-high"),
    ({"tolerations": [{"operator": "Exists"}]}, Policy(), "spec.tolerations[0]: a toleration without a key tolerates every taint"),
    ({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}, Policy(toleration_keys=("nvidia.com/gpu",)),
     "spec.tolerations[0].key: 'dedicated' is not allowed (policy allowed.tolerationKeys: nvidia.com/gpu)"),
    ({"image": "registry.example/other-team/private:1"}, Policy(image_prefixes=("registry.example/team-a/",)),
     "spec.image: 'registry.example/other-team/private:1' is not from an allowed registry"),
    ({"nodeSelector": {"pool": "gpu", "zone": "a"}}, Policy(node_selector_keys=("pool",)), "spec.nodeSelector: key 'zone' is not allowed"),
    ({"securityContext": {"runAsUser": 999}}, Policy(uid_min=1000, uid_max=60000), "spec.securityContext.runAsUser: 999 is outside"),
    ({"securityContext": {"runAsUser": 1000}}, Policy(uid_min=1000, uid_max=60000), "spec.securityContext.runAsGroup: 65532 is outside"),
    ({"resources": {"gpu": 9}}, Policy(max_gpus=8), "spec.resources.gpu: 9 is above the most GPUs per pod (policy allowed.maxGpusPerPod: 8)"),
    ({}, Policy(max_gpus=0), "spec.resources.gpu: 1 is above"),  # no runtime: the operator's default of 1 counts
], ids=["system-node-critical", "system-cluster-critical", "priority-allowlist", "keyless-toleration", "toleration-keys",
        "image-prefix", "node-selector-keys", "uid-below", "gid-above", "gpus", "default-gpu"])
def test_allowlists_refuse_naming_the_rule(spec_dict, placement, policy, words):
    found = violations(_spec(spec_dict, **placement), policy)
    assert any(words in message for message in found), found


@pytest.mark.parametrize("placement, policy", [
    ({"priorityClassName": "batch-high", "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
      "image": "registry.example/team-a/trainer:1", "nodeSelector": {"pool": "gpu"},
      "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000}, "resources": {"gpu": 8}},
     Policy(image_prefixes=("registry.example/team-a/",), priority_classes=("batch-high",), toleration_keys=("nvidia.com/gpu",),
            node_selector_keys=("pool",), uid_min=1000, uid_max=60000, max_gpus=8)),
    ({"tolerations": [{"operator": "Exists"}]}, Policy(keyless_tolerations=True)),
    ({"priorityClassName": "system-node-critical"}, Policy(denied_priority_classes=())),
    ({"resources": {"gpu": 64}, "image": "anything:1"}, Policy()),
], ids=["within-allowlists", "keyless-allowed", "nothing-denied", "empty-lists-restrict-nothing"])
def test_what_the_policy_allows_passes(spec_dict, placement, policy):
    assert violations(_spec(spec_dict, **placement), policy) == []


def test_the_policy_comes_from_the_environment(monkeypatch):
    assert Policy.from_env() == Policy()  # nothing set: the safe defaults
    for name, value in {"KUBETUNE_REQUIRE_RUNTIME": "true", "KUBETUNE_ALLOWED_IMAGE_PREFIXES": "a/, b/",
                        "KUBETUNE_ALLOWED_PRIORITY_CLASSES": "high", "KUBETUNE_DENIED_PRIORITY_CLASSES": "",
                        "KUBETUNE_ALLOWED_TOLERATION_KEYS": "nvidia.com/gpu", "KUBETUNE_ALLOW_KEYLESS_TOLERATIONS": "false",
                        "KUBETUNE_ALLOWED_NODE_SELECTOR_KEYS": "pool", "KUBETUNE_UID_MIN": "1000", "KUBETUNE_UID_MAX": "",
                        "KUBETUNE_MAX_GPUS_PER_POD": "4"}.items():
        monkeypatch.setenv(name, value)
    assert OperatorSettings().policy == Policy(
        require_runtime=True, image_prefixes=("a/", "b/"), priority_classes=("high",), denied_priority_classes=(),
        toleration_keys=("nvidia.com/gpu",), node_selector_keys=("pool",), uid_min=1000, max_gpus=4)


def test_resolve_puts_the_policy_first(spec_dict):
    """A policy refusal needs no lookup: the runtime is read only for a spec the policy allows."""
    def unreachable(*_):
        raise AssertionError("looked up")
    with pytest.raises(preflight.Invalid) as refused:
        runtimes.resolve(_spec(spec_dict, runtime={"name": "cpu"}, image="x:1"), "team-a", REQUIRED, unreachable, unreachable)
    assert refused.value.reason == Reason.PolicyViolation and "spec.image" in str(refused.value)


def test_the_webhook_refuses_a_policy_violation_naming_the_rule(spec_dict, monkeypatch):
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(policy=REQUIRED))
    with pytest.raises(kopf.AdmissionError) as refused:
        admission.check_runtime("FineTuneJob", "team-a", {**spec_dict, "priorityClassName": "x"}, lambda *a: None, lambda ns: {})
    message = str(refused.value)
    assert message.startswith("PolicyViolation: ") and "spec.runtime: required" in message and "spec.priorityClassName" in message
    assert refused.value.code == 422
