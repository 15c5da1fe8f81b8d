"""Pure functions from a FineTuneJob to the Kubernetes objects that run it.

Every child has a deterministic name and a controller ownerReference, so creating it is
idempotent (get-or-create) and deleting the FineTuneJob garbage-collects it.
"""
from __future__ import annotations

from typing import Any

import yaml

from kubetune_operator import api

LABEL_JOB = "kubetune.io/finetunejob"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.yaml"
TERMINATION_LOG = "/dev/termination-log"
TRAINER_CONTAINER = "trainer"
# Job names become pod label values (<= 63 chars) with a suffix the Job controller adds.
MAX_NAME_LENGTH = 52


def child_name(parent: str) -> str:
    """Name shared by the Job, ConfigMap, ServiceAccount, Role and RoleBinding of a job."""
    return f"{parent}-train"


def labels(parent: str) -> dict[str, str]:
    return {LABEL_JOB: parent, LABEL_COMPONENT: "trainer", LABEL_MANAGED_BY: "kubetune"}


def owner_reference(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "FineTuneJob",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": child_name(meta["name"]),
        "namespace": meta["namespace"],
        "labels": labels(meta["name"]),
        "ownerReferences": [owner_reference(meta)],
    }


def config_map(meta: dict[str, Any], spec: api.FineTuneJobSpec) -> dict[str, Any]:
    config = spec.training_config().model_dump(by_alias=True, mode="json", exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(meta),
        "data": {CONFIG_FILE: yaml.safe_dump(config, sort_keys=False)},
    }


def service_account(meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _metadata(meta)}


def role(meta: dict[str, Any]) -> dict[str, Any]:
    """Lets the trainer read and patch the status of its own FineTuneJob, nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(meta),
        "rules": [{
            "apiGroups": [api.GROUP],
            "resources": [f"{api.FINETUNEJOB_PLURAL}/status"],
            "resourceNames": [meta["name"]],
            "verbs": ["get", "patch"],
        }],
    }


def role_binding(meta: dict[str, Any]) -> dict[str, Any]:
    name = child_name(meta["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(meta),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": meta["namespace"]}],
    }


def _resources(spec: api.FineTuneJobSpec) -> dict[str, Any]:
    limits: dict[str, Any] = {}
    if spec.resources.gpu:
        limits["nvidia.com/gpu"] = str(spec.resources.gpu)
    if spec.resources.cpu:
        limits["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        limits["memory"] = spec.resources.memory
    # Requests equal limits: training wants guaranteed resources, not burstable ones.
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _env(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"name": "KUBETUNE_JOB_NAME", "value": meta["name"]},
        {"name": "KUBETUNE_JOB_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "KUBETUNE_TERMINATION_LOG", "value": TERMINATION_LOG},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
    ]


def job(meta: dict[str, Any], spec: api.FineTuneJobSpec) -> dict[str, Any]:
    name = child_name(meta["name"])
    job_labels = labels(meta["name"])
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    for volume in spec.volumes:
        volumes.append({"name": volume.name, "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": volume.read_only}})
        mounts.append({"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only})
    container = {
        "name": TRAINER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "command": ["kubetune-train", "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": _env(meta),
        "resources": _resources(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": name,
        "containers": [container],
        "volumes": volumes,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    job_spec: dict[str, Any] = {
        "backoffLimit": spec.backoff_limit,
        "completions": 1,
        "parallelism": 1,
        "template": {"metadata": {"labels": labels(meta["name"])}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    metadata = _metadata(meta)
    metadata["labels"] = job_labels
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def children(meta: dict[str, Any], spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    """All objects a FineTuneJob needs, in creation order (the Job last, once it can run)."""
    return [config_map(meta, spec), service_account(meta), role(meta), role_binding(meta), job(meta, spec)]
