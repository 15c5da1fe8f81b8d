"""A job's runtime: looked up, allowed for the namespace, checked against the spec, and turned
into the pod's parts. Pure but for the two lookups passed in (the webhook and the operator pass
kube's); builders take the resolved RuntimeSpec.

Precedence (docs/runtimes.md has the table): a field the runtime sets is the runtime's, and the
spec setting it too is refused (RuntimeConflict); resources are the spec's, else the runtime's
defaults, else the operator's, and must fit the runtime's max (PolicyViolation); env and
volumes are added to the operator's own, whose names and paths the runtime may not take.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Optional

from pydantic import ValidationError

import kubetune_api as api
from kubetune_api import wire
from kubetune_api.errors import Reason
from kubetune_api.resources import PodSecurity, Resources
from kubetune_api.runtimes import ClusterRuntimeSpec, RuntimeSpec
from kubetune_operator.policy import Policy, violations
from kubetune_operator import shared
from kubetune_operator.preflight import Invalid

ReadRuntime = Callable[[str, str, str], Optional[dict[str, Any]]]  # (kind, namespace, name) -> object
NamespaceLabels = Callable[[str], dict[str, str]]


@dataclass(frozen=True)
class Resolved:
    """The runtime a launch uses, and what the job's status records of it."""

    kind: str
    name: str
    spec: RuntimeSpec
    generation: Optional[int]
    digest: str

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "generation": self.generation, "digest": self.digest}


def digest(spec: dict[str, Any]) -> str:
    """sha256 of a runtime's spec as canonical JSON: a retry after the runtime changed shows it."""
    return shared.digest(spec or {})


def _described(kind: str, name: str) -> str:
    return f"{kind} {name!r}"


# -- precedence ---------------------------------------------------------------------------------
def conflicts(spec: api.Placement, runtime: RuntimeSpec) -> list[str]:
    """Fields both the spec and the runtime set, and spec volumes on the runtime's names or paths."""
    pairs = {"image": (spec.image, runtime.image), "imagePullPolicy": (spec.image_pull_policy, runtime.image_pull_policy),
             "nodeSelector": (spec.node_selector, runtime.node_selector), "tolerations": (spec.tolerations, runtime.tolerations),
             "priorityClassName": (spec.priority_class_name, runtime.priority_class_name),
             "securityContext": (spec.security_context, runtime.security_context)}
    unset = (None, [], {})
    found = [f"spec.{name}" for name, (mine, theirs) in pairs.items() if mine not in unset and theirs not in unset]
    names, paths = {v.name for v in runtime.volumes}, set(runtime.mount_paths())
    for volume in spec.volumes:
        if volume.name in names:
            found.append(f"spec.volumes[{volume.name}].name")
        if _norm(volume.mount_path) in paths:
            found.append(f"spec.volumes[{volume.name}].mountPath")
    return found


def _norm(path: str) -> str:
    return posixpath.normpath(path)


def effective_resources(spec: Resources, runtime: Optional[RuntimeSpec], eval_job: bool = False) -> Resources:
    """The spec's values, else the runtime's defaults (an EvalJob's single evaluator process takes
    at most one of its default GPUs), else 1 GPU and no CPU or memory request."""
    defaults = runtime.resources.defaults if runtime is not None else None
    gpu = spec.gpu
    if gpu is None and defaults is not None and defaults.gpu is not None:
        gpu = min(defaults.gpu, 1) if eval_job else defaults.gpu
    return Resources(gpu=1 if gpu is None else gpu, cpu=spec.cpu or (defaults.cpu if defaults else None),
                     memory=spec.memory or (defaults.memory if defaults else None), nodes=spec.nodes)


_SUFFIX = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal("1e3"),
           "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"), "P": Decimal("1e15"), "E": Decimal("1e18"),
           **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")}}
_QUANTITY = re.compile(r"^([0-9.]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity's value (the schema checked its grammar)."""
    number, suffix = _QUANTITY.match(text).groups()
    if suffix and suffix[0] in "eE" and len(suffix) > 1:
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SUFFIX[suffix or ""]


def over_max(resources: Resources, runtime: RuntimeSpec, who: str, eval_job: bool = False) -> list[str]:
    """What the resolved resources ask for beyond the runtime's max."""
    limit, found = runtime.resources.max, []
    if limit.gpu is not None and resources.gpu > limit.gpu:
        found.append(f"spec.resources.gpu: {resources.gpu} is above {who}'s resources.max.gpu ({limit.gpu} per pod)")
    if limit.nodes is not None and not eval_job and resources.nodes > limit.nodes:
        found.append(f"spec.resources.nodes: {resources.nodes} is above {who}'s resources.max.nodes ({limit.nodes} per job)")
    for name in ("cpu", "memory"):
        asked, most = getattr(resources, name), getattr(limit, name)
        if most is not None and asked is not None and quantity(asked) > quantity(most):
            found.append(f"spec.resources.{name}: {asked} is above {who}'s resources.max.{name} ({most} per pod)")
        elif most is not None and asked is None:
            found.append(f"spec.resources.{name}: unset (no limit) while {who} allows at most {most} per pod; set it "
                         f"or give the runtime a resources.defaults.{name}")
    return found


# -- resolution -----------------------------------------------------------------------------------
def _parse(kind: str, name: str, obj: dict[str, Any]) -> RuntimeSpec:
    model = ClusterRuntimeSpec if kind == wire.CLUSTER_RUNTIME_KIND else RuntimeSpec
    try:
        return model.model_validate(obj.get("spec") or {})
    except ValidationError as error:  # stored before a schema change, say: unusable, and said so
        raise Invalid(Reason.RuntimeNotAllowed, f"spec.runtime: {_described(kind, name)} is not a valid runtime: "
                      f"{error.errors()[0]['msg']}") from None


def _allowed_namespaces(runtime: ClusterRuntimeSpec) -> str:
    parts = [f"namespaces {', '.join(runtime.namespaces)}"] if runtime.namespaces else []
    if runtime.namespace_selector and runtime.namespace_selector.match_labels:
        parts.append("namespaces labelled " + ", ".join(f"{k}={v}" for k, v in runtime.namespace_selector.match_labels.items()))
    return " or ".join(parts)


def resolve(spec: api.Placement, namespace: str, policy: Policy, read_runtime: ReadRuntime,
            namespace_labels: NamespaceLabels, eval_job: bool = False) -> Optional[Resolved]:
    """The job's runtime, once the policy, the runtime's namespaces, the precedence rules and its
    limits all allow the spec; raises Invalid naming the rule and field. None: no runtime."""
    broken = violations(spec, policy)
    if broken:
        raise Invalid(Reason.PolicyViolation, "; ".join(broken))
    if spec.runtime is None:
        return None
    kind, name = spec.runtime.kind.value, spec.runtime.name
    who = _described(kind, name)
    obj = read_runtime(kind, namespace, name)
    if obj is None:
        where = "" if kind == wire.CLUSTER_RUNTIME_KIND else f" in namespace {namespace!r}"
        raise Invalid(Reason.RuntimeNotFound, f"spec.runtime: {who} does not exist{where}")
    runtime = _parse(kind, name, obj)
    if isinstance(runtime, ClusterRuntimeSpec):
        selector = runtime.namespace_selector.match_labels if runtime.namespace_selector else {}
        if not runtime.allows(namespace, namespace_labels(namespace) if selector else {}):
            raise Invalid(Reason.RuntimeNotAllowed, f"spec.runtime: {who} does not allow namespace {namespace!r} "
                          f"(it allows {_allowed_namespaces(runtime)})")
    clash = conflicts(spec, runtime)
    if clash:
        raise Invalid(Reason.RuntimeConflict, "; ".join(f"{field}: set by {who}, which owns it (leave it unset)" for field in clash))
    too_much = over_max(effective_resources(spec.resources, runtime, eval_job), runtime, who, eval_job)
    if too_much:
        raise Invalid(Reason.PolicyViolation, "; ".join(too_much))
    meta = obj.get("metadata") or {}
    return Resolved(kind, name, runtime, meta.get("generation"), digest(obj.get("spec") or {}))


# -- the pod's parts ------------------------------------------------------------------------------
def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, mode="json", exclude_none=True)


def env(runtime: RuntimeSpec) -> list[dict[str, Any]]:
    """The runtime's variables: its env, the Hub's endpoint and token, the model cache's path."""
    out = [_dump(e) for e in runtime.env]
    if runtime.hub and runtime.hub.endpoint:
        out.append({"name": wire.ENV_HUB_ENDPOINT, "value": runtime.hub.endpoint})
    if runtime.hub and runtime.hub.token_secret:
        token = runtime.hub.token_secret
        out.append({"name": wire.ENV_HUB_TOKEN, "valueFrom": {"secretKeyRef": {"name": token.name, "key": token.key}}})
    if runtime.model_cache:
        out.append({"name": wire.ENV_MODEL_CACHE, "value": runtime.model_cache.mount_path})
    return out


def volumes(runtime: RuntimeSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts) the runtime adds, its model cache included."""
    pod_volumes, mounts = [], []
    for volume in runtime.volumes:
        source: dict[str, Any]
        if volume.persistent_volume_claim:
            source = {"persistentVolumeClaim": {"claimName": volume.persistent_volume_claim.claim_name, "readOnly": volume.read_only}}
        elif volume.secret:
            source = {"secret": {"secretName": volume.secret.secret_name}}
        elif volume.config_map:
            source = {"configMap": {"name": volume.config_map.name}}
        else:
            source = {"emptyDir": {k: v for k, v in _dump(volume.empty_dir).items() if v != ""}}  # medium "": the default
        pod_volumes.append({"name": volume.name, **source})
        read_only = volume.read_only or bool(volume.secret or volume.config_map)
        mounts.append({"name": volume.name, "mountPath": volume.mount_path, "readOnly": read_only})
    if runtime.model_cache:
        pod_volumes.append({"name": wire.MODEL_CACHE_VOLUME, "persistentVolumeClaim": {"claimName": runtime.model_cache.claim_name}})
        mounts.append({"name": wire.MODEL_CACHE_VOLUME, "mountPath": runtime.model_cache.mount_path})
    return pod_volumes, mounts


def pod_fields(runtime: RuntimeSpec) -> dict[str, Any]:
    """The pod spec's fields only a runtime sets (nodeSelector, tolerations and the priority class
    are merged with the spec's by builders)."""
    fields: dict[str, Any] = {}
    if runtime.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": s.name} for s in runtime.image_pull_secrets]
    if runtime.service_account_name:
        fields["serviceAccountName"] = runtime.service_account_name
    if runtime.affinity and runtime.affinity.node_affinity:
        node = {k: v for k, v in _dump(runtime.affinity.node_affinity).items() if v != []}
        fields["affinity"] = {"nodeAffinity": node}
    if runtime.scheduler_name:
        fields["schedulerName"] = runtime.scheduler_name
    return fields


def security(spec: api.Placement, runtime: Optional[RuntimeSpec]) -> PodSecurity:
    """Who the pods run as: the spec's, else the runtime's, else the images' user."""
    return spec.security_context or (runtime.security_context if runtime else None) or PodSecurity()
