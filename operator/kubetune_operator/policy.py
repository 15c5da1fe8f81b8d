"""The admin's policy on what a job's spec may set itself: runtimes mandatory, or allowlists.

Read once from the operator's environment (the chart's `policy.*` values). Pure decisions: the
admission webhook refuses a spec that breaks a rule, naming it, and the operator checks again
before each launch (a job admitted before the policy changed fails with PolicyViolation).
The rules apply to what the spec sets; what a runtime sets is the admin's own choice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import kubetune_api as api

# Priority classes no tenant's training should run at (they outrank the cluster's own daemons).
SYSTEM_PRIORITY_CLASSES = ("system-node-critical", "system-cluster-critical")
# What requireRuntime leaves to the runtime: the spec may not set these itself.
RUNTIME_ONLY_FIELDS = ("image", "imagePullPolicy", "priorityClassName", "tolerations", "nodeSelector", "securityContext")


def _env_list(name: str, default: str = "") -> tuple[str, ...]:
    return tuple(item.strip() for item in os.environ.get(name, default).split(",") if item.strip())


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


@dataclass(frozen=True)
class Policy:
    """Empty lists restrict nothing, except the two defaults that are never safe for a tenant:
    the system priority classes, and a toleration of every taint (operator Exists, no key)."""

    require_runtime: bool = False
    image_prefixes: tuple[str, ...] = ()
    priority_classes: tuple[str, ...] = ()
    denied_priority_classes: tuple[str, ...] = SYSTEM_PRIORITY_CLASSES
    toleration_keys: tuple[str, ...] = ()
    keyless_tolerations: bool = False
    node_selector_keys: tuple[str, ...] = ()
    uid_min: Optional[int] = None
    uid_max: Optional[int] = None
    max_gpus: Optional[int] = None

    @classmethod
    def from_env(cls) -> "Policy":
        return cls(
            require_runtime=_env_bool("KUBETUNE_REQUIRE_RUNTIME"),
            image_prefixes=_env_list("KUBETUNE_ALLOWED_IMAGE_PREFIXES"),
            priority_classes=_env_list("KUBETUNE_ALLOWED_PRIORITY_CLASSES"),
            denied_priority_classes=_env_list("KUBETUNE_DENIED_PRIORITY_CLASSES", ",".join(SYSTEM_PRIORITY_CLASSES)),
            toleration_keys=_env_list("KUBETUNE_ALLOWED_TOLERATION_KEYS"),
            keyless_tolerations=_env_bool("KUBETUNE_ALLOW_KEYLESS_TOLERATIONS"),
            node_selector_keys=_env_list("KUBETUNE_ALLOWED_NODE_SELECTOR_KEYS"),
            uid_min=_env_int("KUBETUNE_UID_MIN"),
            uid_max=_env_int("KUBETUNE_UID_MAX"),
            max_gpus=_env_int("KUBETUNE_MAX_GPUS_PER_POD"),
        )


def spec_sets(spec: api.Placement) -> list[str]:
    """The runtime-only fields this spec sets itself (camelCase, as written)."""
    values = {"image": spec.image, "imagePullPolicy": spec.image_pull_policy, "priorityClassName": spec.priority_class_name,
              "tolerations": spec.tolerations, "nodeSelector": spec.node_selector, "securityContext": spec.security_context}
    return [name for name in RUNTIME_ONLY_FIELDS if values[name] not in (None, [], {})]


def _uids(spec: api.Placement) -> list[tuple[str, int]]:
    security = spec.security_context
    if security is None:
        return []
    return [("runAsUser", security.run_as_user), ("runAsGroup", security.run_as_group), ("fsGroup", security.fs_group)]


def violations(spec: api.Placement, policy: Policy) -> list[str]:
    """Every rule the spec breaks, each naming the field and the rule (empty: allowed)."""
    found: list[str] = []
    if policy.require_runtime:
        if spec.runtime is None:
            found.append("spec.runtime: required by the operator's policy (requireRuntime): name a ClusterTrainingRuntime "
                         "or TrainingRuntime")
        found += [f"spec.{name}: set by the runtime only (policy requireRuntime)" for name in spec_sets(spec)]
        return found
    if spec.image and policy.image_prefixes and not spec.image.startswith(policy.image_prefixes):
        found.append(f"spec.image: {spec.image!r} is not from an allowed registry (policy allowed.imagePrefixes: "
                     f"{', '.join(policy.image_prefixes)})")
    if spec.priority_class_name:
        name = spec.priority_class_name
        if name in policy.denied_priority_classes:
            found.append(f"spec.priorityClassName: {name!r} is denied (policy deniedPriorityClasses: "
                         f"{', '.join(policy.denied_priority_classes)})")
        elif policy.priority_classes and name not in policy.priority_classes:
            found.append(f"spec.priorityClassName: {name!r} is not allowed (policy allowed.priorityClasses: "
                         f"{', '.join(policy.priority_classes)})")
    for i, toleration in enumerate(spec.tolerations):
        if toleration.key is None and not policy.keyless_tolerations:
            found.append(f"spec.tolerations[{i}]: a toleration without a key tolerates every taint (policy "
                         "allowed.keylessTolerations is false)")
        elif toleration.key is not None and policy.toleration_keys and toleration.key not in policy.toleration_keys:
            found.append(f"spec.tolerations[{i}].key: {toleration.key!r} is not allowed (policy allowed.tolerationKeys: "
                         f"{', '.join(policy.toleration_keys)})")
    if policy.node_selector_keys:
        found += [f"spec.nodeSelector: key {key!r} is not allowed (policy allowed.nodeSelectorKeys: "
                  f"{', '.join(policy.node_selector_keys)})" for key in spec.node_selector if key not in policy.node_selector_keys]
    for name, uid in _uids(spec):
        if (policy.uid_min is not None and uid < policy.uid_min) or (policy.uid_max is not None and uid > policy.uid_max):
            found.append(f"spec.securityContext.{name}: {uid} is outside the allowed range (policy allowed.uidRange: "
                         f"{policy.uid_min if policy.uid_min is not None else 1}..{policy.uid_max if policy.uid_max is not None else 'any'})")
    # Unset with a runtime: the runtime's default, which its own max bounds; unset without one: 1.
    gpu = spec.resources.gpu if spec.resources.gpu is not None else (None if spec.runtime else 1)
    if policy.max_gpus is not None and gpu is not None and gpu > policy.max_gpus:
        found.append(f"spec.resources.gpu: {gpu} is above the most GPUs per pod (policy allowed.maxGpusPerPod: "
                     f"{policy.max_gpus})")
    evaluation = getattr(spec, "evaluation", None)  # a FineTuneJob's EvalJobs: refused now, not after training
    if policy.max_gpus is not None and evaluation is not None and (evaluation.gpu or 0) > policy.max_gpus:
        found.append(f"spec.evaluation.gpu: {evaluation.gpu} is above the most GPUs per pod (policy "
                     f"allowed.maxGpusPerPod: {policy.max_gpus})")
    return found
