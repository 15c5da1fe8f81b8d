"""ClusterTrainingRuntime and TrainingRuntime, kubetune.io/v1alpha1: what an admin gives the
pods of the jobs that name one in spec.runtime (image, placement, credentials, volumes,
resource defaults and limits). The source the two CRDs are generated from.

A runtime is a typed fragment of a pod template, never a whole one: the operator's own env,
volumes and security settings stay the operator's (names and paths it uses are refused here),
and pods still get no Kubernetes API token (a workload identity such as IRSA or GKE Workload
Identity needs none). How a runtime, a job's spec and the operator's defaults combine is in
docs/runtimes.md (one table) and operator/kubetune_operator/runtimes.py.
"""
from __future__ import annotations

import posixpath
import re
from enum import Enum
from typing import Annotated, Optional

from pydantic import Field, StringConstraints, field_validator, model_validator

from kubetune_api.base import DNS_LABEL_PATTERN, DNS_SUBDOMAIN_MAX, DNS_SUBDOMAIN_PATTERN, MAX_LIST, MAX_PATH, ApiModel
from kubetune_api.resources import (LABEL_VALUE_PATTERN, MAX_QUANTITY, QUALIFIED_NAME_PATTERN, QUANTITY_PATTERN, ImagePullPolicy,
                                    PodSecurity, Toleration)
from kubetune_api.wire import (DEFAULT_IMAGE, DEFAULT_MODEL_CACHE_PATH, ENV_HUB_ENDPOINT, ENV_HUB_TOKEN, RESERVED_ENV, RESERVED_ENV_PREFIX,
                               RESERVED_MOUNT_PATHS, RESERVED_VOLUMES)

# A C identifier, as shells and most programs take env names (Kubernetes allows more).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MOUNT_PATH_PATTERN = r"^/[^:]*$"
MAX_ENV_VALUE = 32768
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]
LabelKey = Annotated[str, StringConstraints(max_length=317, pattern=QUALIFIED_NAME_PATTERN)]
Quantity = Annotated[str, StringConstraints(max_length=MAX_QUANTITY, pattern=QUANTITY_PATTERN)]


def _label_keys(labels: dict[str, str], field: str) -> dict[str, str]:
    """Label keys as Kubernetes validates them (a map key's pattern has no place in a CRD schema)."""
    bad = [key for key in labels if len(key) > 317 or not re.match(QUALIFIED_NAME_PATTERN, key)]
    if bad:
        raise ValueError(f"{field}: not a label key: {', '.join(map(repr, bad))}")
    return labels


def _name_field(what: str):
    return Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description=what)


class KeySelector(ApiModel):
    name: str = _name_field("The Secret or ConfigMap, in the job's namespace.")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="The key in it.")


class EnvVarSource(ApiModel):
    secret_key_ref: Optional[KeySelector] = Field(None, description="A key of a Secret in the job's namespace.")
    config_map_key_ref: Optional[KeySelector] = Field(None, description="A key of a ConfigMap in the job's namespace.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "EnvVarSource":
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError("valueFrom: set exactly one of secretKeyRef and configMapKeyRef")
        return self


class EnvVar(ApiModel):
    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256, description=f"Variable name; not one of the operator's ({RESERVED_ENV_PREFIX}*, {', '.join(RESERVED_ENV)}).")
    value: Optional[str] = Field(None, max_length=MAX_ENV_VALUE, description="A literal value (set this or valueFrom).")
    value_from: Optional[EnvVarSource] = Field(None, description="The value from a Secret's or ConfigMap's key (set this or value).")

    @model_validator(mode="after")
    def _one_value(self) -> "EnvVar":
        if (self.value is None) == (self.value_from is None):
            raise ValueError(f"env[{self.name}]: set exactly one of value and valueFrom")
        return self


class ObjectRef(ApiModel):
    name: str = _name_field("The object's name, in the job's namespace.")


class EnvFromSource(ApiModel):
    """Every key of a Secret or ConfigMap as a variable. The operator's own variables are set
    with env, which Kubernetes gives precedence over envFrom: a key cannot override them."""

    secret_ref: Optional[ObjectRef] = Field(None, description="A Secret in the job's namespace.")
    config_map_ref: Optional[ObjectRef] = Field(None, description="A ConfigMap in the job's namespace.")
    prefix: Optional[str] = Field(None, pattern=ENV_NAME_PATTERN, max_length=64, description="Prepended to every key.")

    @model_validator(mode="after")
    def _exactly_one(self) -> "EnvFromSource":
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError("envFrom: set exactly one of secretRef and configMapRef")
        return self


class NodeSelectorOperator(str, Enum):
    In = "In"
    NotIn = "NotIn"
    Exists = "Exists"
    DoesNotExist = "DoesNotExist"
    Gt = "Gt"
    Lt = "Lt"


class NodeSelectorRequirement(ApiModel):
    key: LabelKey = Field(description="Node label key.")
    operator: NodeSelectorOperator = Field(description="In, NotIn, Exists, DoesNotExist, Gt or Lt.")
    values: list[LabelValue] = Field(default_factory=list, max_length=MAX_LIST, description="Values for In and NotIn; one integer for Gt and Lt; none for Exists and DoesNotExist.")


class NodeSelectorTerm(ApiModel):
    match_expressions: list[NodeSelectorRequirement] = Field(min_length=1, max_length=64, description="Requirements, all of which must hold.")


class NodeSelector(ApiModel):
    node_selector_terms: list[NodeSelectorTerm] = Field(min_length=1, max_length=64, description="Terms, any of which may hold.")


class PreferredSchedulingTerm(ApiModel):
    weight: int = Field(ge=1, le=100, description="Weight of this preference.")
    preference: NodeSelectorTerm = Field(description="The node requirements preferred.")


class NodeAffinity(ApiModel):
    required_during_scheduling_ignored_during_execution: Optional[NodeSelector] = Field(
        None, description="Nodes the pods must run on.")
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=64, description="Nodes the scheduler prefers, by weight.")


class Affinity(ApiModel):
    """Node affinity only: pod (anti-)affinity across tenants' pods is not the runtime's to set."""

    node_affinity: Optional[NodeAffinity] = Field(None, description="Which nodes the pods run on.")


class EmptyDirMedium(str, Enum):
    default = ""
    Memory = "Memory"


class EmptyDir(ApiModel):
    medium: Optional[EmptyDirMedium] = Field(None, description="Unset or \"\" (the node's disk), or Memory (a tmpfs, e.g. /dev/shm for NCCL).")
    size_limit: Optional[Quantity] = Field(None, description="Most the volume may hold (for Memory: counted against the pod's memory).")


class ClaimSource(ApiModel):
    claim_name: str = _name_field("PersistentVolumeClaim in the job's namespace.")


class SecretSource(ApiModel):
    secret_name: str = _name_field("Secret in the job's namespace.")


class RuntimeVolume(ApiModel):
    """An extra volume for every pod of the job: exactly one source."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description=f"Volume name in the pod; not one of the operator's ({', '.join(RESERVED_VOLUMES)}).")
    mount_path: str = Field(pattern=MOUNT_PATH_PATTERN, max_length=MAX_PATH, description="Absolute path in the container, without ':'.")
    read_only: bool = Field(False, description="Mount read-only (Secret and ConfigMap volumes always are).")
    persistent_volume_claim: Optional[ClaimSource] = Field(None, description="A PersistentVolumeClaim.")
    secret: Optional[SecretSource] = Field(None, description="A Secret's keys as files.")
    config_map: Optional[ObjectRef] = Field(None, description="A ConfigMap's keys as files.")
    empty_dir: Optional[EmptyDir] = Field(None, description="A scratch directory that lives as long as the pod.")

    @model_validator(mode="after")
    def _one_source(self) -> "RuntimeVolume":
        sources = [s for s in (self.persistent_volume_claim, self.secret, self.config_map, self.empty_dir) if s is not None]
        if len(sources) != 1:
            raise ValueError(f"volumes[{self.name}]: set exactly one of persistentVolumeClaim, secret, configMap and emptyDir")
        return self


class ModelCache(ApiModel):
    claim_name: str = _name_field("PersistentVolumeClaim in the job's namespace holding the Hugging Face Hub cache, shared by the jobs that use this runtime (ReadWriteMany for jobs on several nodes).")
    mount_path: str = Field(DEFAULT_MODEL_CACHE_PATH, pattern=MOUNT_PATH_PATTERN, max_length=MAX_PATH,
                            description="Where it is mounted; the pods get it as KUBETUNE_MODEL_CACHE.")


class HubToken(ApiModel):
    name: str = _name_field("Secret in the job's namespace.")
    key: str = Field("token", min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key holding the token.")


class Hub(ApiModel):
    endpoint: Optional[str] = Field(None, pattern=r"^https?://[^\s]+$", max_length=MAX_PATH, description=f"A Hugging Face Hub mirror's URL ({ENV_HUB_ENDPOINT}); unset: huggingface.co.")
    token_secret: Optional[HubToken] = Field(None, description=f"The Hub token ({ENV_HUB_TOKEN}) for gated and private models and datasets.")


class ResourceDefaults(ApiModel):
    gpu: Optional[int] = Field(None, ge=0, le=64, description="GPUs per pod when the job's spec.resources.gpu is unset (an EvalJob takes at most 1 of them).")
    cpu: Optional[Quantity] = Field(None, description="CPU per pod when the job's spec.resources.cpu is unset.")
    memory: Optional[Quantity] = Field(None, description="Memory per pod when the job's spec.resources.memory is unset.")


class ResourceMax(ApiModel):
    gpu: Optional[int] = Field(None, ge=0, le=64, description="Most GPUs per pod.")
    nodes: Optional[int] = Field(None, ge=1, le=64, description="Most pods per job (spec.resources.nodes).")
    cpu: Optional[Quantity] = Field(None, description="Most CPU per pod.")
    memory: Optional[Quantity] = Field(None, description="Most memory per pod.")


class RuntimeResources(ApiModel):
    defaults: ResourceDefaults = Field(default_factory=ResourceDefaults, description="What a job that sets no value gets.")
    max: ResourceMax = Field(default_factory=ResourceMax, description="What a job may ask for at most: more is refused at apply.")


class RuntimeSpec(ApiModel):
    """What the pods of a job naming this runtime get. A field set here is the runtime's: a job
    setting it too is refused at apply."""

    image: Optional[str] = Field(None, min_length=1, max_length=1024, description=f"Container image (with the kubetune-train, kubetune-eval and kubetune-promote commands); unset: the job's own image if the policy lets it name one, else the operator's trainer image setting (by default {DEFAULT_IMAGE}).")
    image_pull_policy: Optional[ImagePullPolicy] = Field(None, description="Always, IfNotPresent or Never.")
    image_pull_secrets: list[ObjectRef] = Field(default_factory=list, max_length=16, description="Secrets in the job's namespace to pull the image with (a private registry).")
    service_account_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX,
        description="The pods' ServiceAccount in the job's namespace, for a cloud workload identity (IRSA, GKE Workload Identity); the pods still get no Kubernetes API token.")
    node_selector: dict[str, LabelValue] = Field(default_factory=dict, max_length=64, description="Node labels the pods must match.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64, description="Taints the pods tolerate.")
    affinity: Optional[Affinity] = Field(None, description="Node affinity of the pods.")
    priority_class_name: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description="PriorityClass of the pods.")
    scheduler_name: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description="Scheduler of the pods (e.g. a gang scheduler).")
    security_context: Optional[PodSecurity] = Field(None, description="User and groups the pods run as (the rest of the security context stays restricted).")
    env: list[EnvVar] = Field(default_factory=list, max_length=128, description="Variables added to the operator's own.")
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=16, description="Secrets and ConfigMaps whose keys become variables.")
    volumes: list[RuntimeVolume] = Field(default_factory=list, max_length=32, description="Volumes added to the pods (a job's own volumes may not reuse their names or paths).")
    model_cache: Optional[ModelCache] = Field(None, description="A shared Hugging Face Hub cache volume.")
    hub: Optional[Hub] = Field(None, description="The Hugging Face Hub endpoint and token.")
    resources: RuntimeResources = Field(default_factory=RuntimeResources, description="Resource defaults and limits per pod and per job.")

    @field_validator("node_selector")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_keys(value, "nodeSelector")

    def mount_paths(self) -> list[str]:
        """Every path this runtime mounts (its volumes and the model cache), normalized."""
        paths = [posixpath.normpath(v.mount_path) for v in self.volumes]
        return paths + ([posixpath.normpath(self.model_cache.mount_path)] if self.model_cache else [])

    def env_names(self) -> list[str]:
        """Every variable name this runtime sets itself (env and hub)."""
        hub = [ENV_HUB_ENDPOINT] if self.hub and self.hub.endpoint else []
        hub += [ENV_HUB_TOKEN] if self.hub and self.hub.token_secret else []
        return [e.name for e in self.env] + hub

    @model_validator(mode="after")
    def _fits_the_pod(self) -> "RuntimeSpec":
        names = self.env_names()
        clash = sorted({n for n in names if names.count(n) > 1 or n.startswith(RESERVED_ENV_PREFIX) or n in RESERVED_ENV})
        if clash:
            raise ValueError(f"env: names must be unique, not {ENV_HUB_ENDPOINT}/{ENV_HUB_TOKEN} when hub sets them, and not the "
                             f"operator's ({RESERVED_ENV_PREFIX}*, {', '.join(RESERVED_ENV)}); repeated or reserved: {', '.join(clash)}")
        volumes = [v.name for v in self.volumes]
        taken = sorted({n for n in volumes if volumes.count(n) > 1 or n in RESERVED_VOLUMES})
        if taken:
            raise ValueError(f"volumes: names must be unique and not the operator's ({', '.join(RESERVED_VOLUMES)}); "
                             f"repeated or reserved: {', '.join(taken)}")
        paths = self.mount_paths()
        clash = sorted({p for p in paths if paths.count(p) > 1 or p in RESERVED_MOUNT_PATHS})
        if clash:
            raise ValueError(f"volumes: mountPaths (modelCache's included) must be unique and not {', '.join(RESERVED_MOUNT_PATHS)}; "
                             f"clashing: {', '.join(clash)}")
        return self


class LabelSelector(ApiModel):
    match_labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=64, description="Labels a namespace must have, all of them.")

    @field_validator("match_labels")
    @classmethod
    def _keys(cls, value: dict[str, str]) -> dict[str, str]:
        return _label_keys(value, "namespaceSelector.matchLabels")


class ClusterRuntimeSpec(RuntimeSpec):
    """A RuntimeSpec, and which namespaces' jobs may use it."""

    namespaces: list[Annotated[str, StringConstraints(max_length=63, pattern=DNS_LABEL_PATTERN)]] = Field(
        default_factory=list, max_length=MAX_LIST,
        description="Namespaces whose jobs may use this runtime; with namespaceSelector, a namespace matching either may. Both empty: every namespace.")
    namespace_selector: Optional[LabelSelector] = Field(None, description="Labels of the namespaces whose jobs may use this runtime.")

    def allows(self, namespace: str, labels: dict[str, str]) -> bool:
        """Whether a job in `namespace` (with these labels) may use this runtime."""
        selector = self.namespace_selector.match_labels if self.namespace_selector else {}
        if not self.namespaces and not selector:
            return True
        by_labels = bool(selector) and all(labels.get(k) == v for k, v in selector.items())
        return namespace in self.namespaces or by_labels


class ClusterTrainingRuntime(ApiModel):
    """Image, placement, credentials, volumes and resource limits an admin gives the pods of the jobs that name it, in the namespaces it allows (cluster-scoped)."""

    spec: ClusterRuntimeSpec


class TrainingRuntime(ApiModel):
    """Image, placement, credentials, volumes and resource limits an admin gives the pods of the jobs in its namespace that name it."""

    spec: RuntimeSpec
