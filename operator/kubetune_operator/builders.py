"""Pure functions from a FineTuneJob or EvalJob to the Kubernetes objects that run it.

Every child has a deterministic name and a controller ownerReference, so creating it is
idempotent (get-or-create) and deleting the parent garbage-collects it.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import yaml
from pydantic import BaseModel

import kubetune_api as api
from kubetune_api import layout, wire
from kubetune_api.catalog import produces_full_model
from kubetune_api.promotion import PromoteConfig
from kubetune_api.resources import ImagePullPolicy, Resources
from kubetune_api.runtimes import RuntimeSpec
from kubetune_operator import multinode, runtimes, tracking
from kubetune_operator.attempts import ATTEMPT_LABEL, job_name


@dataclass(frozen=True)
class Workload:
    """What differs between the kinds of kubetune job; everything else is shared."""

    kind: str
    plural: str
    suffix: str  # of child object names
    label: str  # label on children naming their parent
    container: str
    command: str


FINETUNE = Workload(api.FINETUNEJOB_KIND, api.FINETUNEJOB_PLURAL, "train", "kubetune.io/finetunejob", "trainer", "kubetune-train")
EVAL = Workload(api.EVALJOB_KIND, api.EVALJOB_PLURAL, "eval", "kubetune.io/evaljob", "evaluator", "kubetune-eval")
# A FineTuneJob's promotion pod: its own label.
PROMOTE = Workload(api.FINETUNEJOB_KIND, api.FINETUNEJOB_PLURAL, "promote", "kubetune.io/promotion", "promoter", "kubetune-promote")

LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"

CONFIG_DIR, CONFIG_FILE, TERMINATION_LOG = wire.CONFIG_DIR, wire.CONFIG_FILE, wire.TERMINATION_LOG


def child_name(parent: str, workload: Workload) -> str:
    """Name shared by the ConfigMap and the (first attempt's) Job of a job."""
    return f"{parent}-{workload.suffix}"


def labels(parent: str, workload: Workload) -> dict[str, str]:
    return {workload.label: parent, LABEL_COMPONENT: workload.container, LABEL_MANAGED_BY: "kubetune"}


def owned_by(obj: dict[str, Any], uid: str) -> bool:
    """Whether `uid` is among obj's owners: what ties a child to its job (names and labels
    can be chosen by anyone who may create objects in the namespace)."""
    return any(ref.get("uid") == uid for ref in (obj.get("metadata") or {}).get("ownerReferences") or [])


def owner_uid(obj: dict[str, Any], kind: str) -> Optional[str]:
    """The uid of obj's controller of `kind`, if it has one."""
    return next((ref.get("uid") for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
                 if ref.get("kind") == kind and ref.get("controller")), None)


def owner_reference(meta: dict[str, Any], workload: Workload) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": workload.kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(meta: dict[str, Any], workload: Workload) -> dict[str, Any]:
    return {
        "name": child_name(meta["name"], workload),
        "namespace": meta["namespace"],
        "labels": labels(meta["name"], workload),
        "ownerReferences": [owner_reference(meta, workload)],
    }


def config_map(meta: dict[str, Any], workload: Workload, config: BaseModel) -> dict[str, Any]:
    """The pod's config file: exactly the TrainingConfig or EvalConfig, nothing of placement."""
    data = config.model_dump(by_alias=True, mode="json", exclude_none=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(meta, workload),
        "data": {CONFIG_FILE: yaml.safe_dump(data, sort_keys=False)},
    }


def container_resources(resources: Any) -> dict[str, Any]:
    """A container's resources from gpu/cpu/memory (a job's Resources, or promotion.serve.resources)."""
    limits: dict[str, Any] = {}
    if resources.gpu:
        limits["nvidia.com/gpu"] = str(resources.gpu)
    if resources.cpu:
        limits["cpu"] = resources.cpu
    if resources.memory:
        limits["memory"] = resources.memory
    # Requests equal limits: training wants guaranteed resources, not burstable ones.
    return {"limits": limits, "requests": dict(limits)} if limits else {}


def _env(meta: dict[str, Any], workload: Workload, spec: api.Placement) -> list[dict[str, Any]]:
    return [
        {"name": wire.ENV_TERMINATION_LOG, "value": TERMINATION_LOG},
        {"name": wire.ENV_WRITABLE_ROOTS, "value": ":".join(spec.writable_roots())},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        *({"name": name, "value": value} for name, value in wire.CACHE_ENV.items()),
        *tracking.env(meta, getattr(spec, "tracking", None)),
    ]


def pod_security(spec: api.Placement, runtime: Optional[RuntimeSpec] = None) -> dict[str, Any]:
    """The pod's securityContext: non-root as the spec's (or its runtime's) user, the container
    runtime's seccomp profile, and volumes group-owned by fsGroup (chowned only when their root
    does not match: big PVCs)."""
    security = runtimes.security(spec, runtime)
    return {"runAsNonRoot": True, "runAsUser": security.run_as_user, "runAsGroup": security.run_as_group,
            "fsGroup": security.fs_group, "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security() -> dict[str, Any]:
    """The container's securityContext: the restricted Pod Security Standard, read-only root."""
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True,
            "runAsNonRoot": True, "privileged": False}


def _writable_dirs(mounts: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> None:
    """emptyDirs for /tmp, the caches and the working directory (the root filesystem is read-only),
    except where a spec's or runtime's volume is mounted at exactly that path."""
    taken = {posixpath.normpath(m["mountPath"]) for m in mounts}
    for name, path in wire.WRITABLE_DIRS.items():
        if path not in taken:
            volumes.append({"name": name, "emptyDir": {}})
            mounts.append({"name": name, "mountPath": path})


def command(workload: Workload, gpus: int, nodes: int = 1) -> list[str]:
    """One process per GPU for training (accelerate launch); a plain process otherwise. Over
    several nodes, one process per GPU (one on CPU) in each pod (see multinode)."""
    config = ["--config", f"{CONFIG_DIR}/{CONFIG_FILE}"]
    if workload is FINETUNE and nodes > 1:
        return multinode.launch_command(max(gpus, 1), nodes, config)
    if workload is FINETUNE and gpus > 1:
        return ["accelerate", "launch", "--multi_gpu", "--num_processes", str(gpus), "-m", "kubetune_trainer.cli", *config]
    return [workload.command, *config]


def _volumes(name: str, spec: api.Placement, runtime: Optional[RuntimeSpec]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, volumeMounts): the config, the spec's PVCs, the runtime's, the writable dirs."""
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {"name": name}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
    for volume in spec.volumes:
        volumes.append({"name": volume.name, "persistentVolumeClaim": {"claimName": volume.claim_name, "readOnly": volume.read_only}})
        mounts.append({"name": volume.name, "mountPath": volume.mount_path, "readOnly": volume.read_only})
    if runtime is not None:
        extra_volumes, extra_mounts = runtimes.volumes(runtime)
        volumes += extra_volumes
        mounts += extra_mounts
    _writable_dirs(mounts, volumes)
    return volumes, mounts


def _placement(spec: api.Placement, runtime: Optional[RuntimeSpec]) -> dict[str, Any]:
    """The pod's scheduling fields. A field the runtime sets, the spec may not (runtimes.conflicts):
    at most one side is set."""
    fields: dict[str, Any] = {}
    node_selector = {**(runtime.node_selector if runtime else {}), **spec.node_selector}
    tolerations = [*(runtime.tolerations if runtime else []), *spec.tolerations]
    priority_class = spec.priority_class_name or (runtime.priority_class_name if runtime else None)
    if node_selector:
        fields["nodeSelector"] = node_selector
    if tolerations:
        fields["tolerations"] = [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tolerations]
    if priority_class:
        fields["priorityClassName"] = priority_class
    return {**fields, **(runtimes.pod_fields(runtime) if runtime is not None else {})}


def job(meta: dict[str, Any], workload: Workload, spec: api.Placement, default_image: str = api.DEFAULT_IMAGE,
        attempt: int = 1, job_suspend_supported: bool = False, evaluate_metrics: Sequence[str] = (),
        runtime: Optional[RuntimeSpec] = None) -> dict[str, Any]:
    """The Job of one attempt. backoffLimit 0: the operator, not the Job controller, decides
    whether a failed pod earns another attempt (see attempts.py). An evaluator pod may load the
    `evaluate` metrics the operator allows, and no other. `runtime`: the resolved spec of the
    job's runtime (runtimes.resolve), merged in by the precedence runtimes.py states."""
    name = child_name(meta["name"], workload)
    resources = runtimes.effective_resources(spec.resources, runtime, eval_job=workload is EVAL)
    nodes = resources.nodes if workload is FINETUNE else 1  # rank 0; the operator adds the others
    pod_labels = {**labels(meta["name"], workload), ATTEMPT_LABEL: str(attempt),
                  **(multinode.main_labels() if nodes > 1 else {})}
    job_labels = dict(pod_labels)
    if spec.queue_name:
        job_labels[KUEUE_QUEUE_LABEL] = spec.queue_name
    volumes, mounts = _volumes(name, spec, runtime)
    pull_policy = spec.image_pull_policy or (runtime.image_pull_policy if runtime else None) or ImagePullPolicy.IfNotPresent
    container = {
        "name": workload.container,
        "image": spec.image or (runtime.image if runtime else None) or default_image,
        "imagePullPolicy": pull_policy.value,
        "command": command(workload, resources.gpu, nodes),
        # The operator's variables come first and the runtime cannot name them (its schema refuses).
        # The metrics allowlist is set in every pod, empty but for an evaluator's: env wins over
        # envFrom, so a key in a tenant's Secret that a runtime's envFrom names cannot widen it.
        "env": _env(meta, workload, spec) + (multinode.main_env(meta["uid"]) if nodes > 1 else [])
        + [{"name": wire.ENV_ALLOWED_EVALUATE_METRICS, "value": ",".join(evaluate_metrics) if workload is EVAL else ""}]
        + (runtimes.env(runtime) if runtime is not None else []),
        "resources": container_resources(resources),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security(),
    }
    if runtime is not None and runtime.env_from:
        container["envFrom"] = [e.model_dump(by_alias=True, mode="json", exclude_none=True) for e in runtime.env_from]
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": pod_security(spec, runtime),
        # No API access: the pod reports through its log and termination message, which
        # the operator reads; a tenant's image holds no credentials to forge a status with.
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    pod_spec.update(_placement(spec, runtime))
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "completions": 1,
        "parallelism": 1,
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.queue_name and job_suspend_supported:
        job_spec["suspend"] = True  # Kueue admits the Job by unsuspending it (see kueue.py)
    metadata = _metadata(meta, workload)
    metadata.update(name=job_name(name, attempt), labels=job_labels)
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": job_spec}


def network_policy(meta: dict[str, Any]) -> dict[str, Any]:
    """The NetworkPolicy of a multi-node FineTuneJob: its pods (any attempt, any rank) accept
    connections only from pods of the same job in the same namespace, so nothing else reaches
    the rendezvous or the ranks' collectives (which open ports of their own: no port list)."""
    job_pods = {"matchLabels": {FINETUNE.label: meta["name"]}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": _metadata(meta, FINETUNE),
            "spec": {"podSelector": job_pods, "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": job_pods}]}]}}


def children(meta: dict[str, Any], workload: Workload, placement: api.Placement, config: BaseModel,
             default_image: str = api.DEFAULT_IMAGE, runtime: Optional[RuntimeSpec] = None) -> list[dict[str, Any]]:
    """All objects a job needs, in creation order (the Job last, once it can run)."""
    multinode_policy = [network_policy(meta)] if workload is FINETUNE and placement.resources.nodes > 1 else []
    return [config_map(meta, workload, config), *multinode_policy, job(meta, workload, placement, default_image, runtime=runtime)]


def evaluation_job_names(parent: str) -> tuple[str, str]:
    """Names of the EvalJobs of a FineTuneJob's evaluation block: (scores, retention)."""
    return f"{parent}-eval", f"{parent}-retention"


def evaluation_jobs(meta: dict[str, Any], spec: api.FineTuneJobSpec) -> list[dict[str, Any]]:
    """EvalJobs comparing the base model with the FineTuneJob's output, owned by the FineTuneJob:
    one on spec.evaluation.dataset, and one (perplexity) on the retention data if given."""
    evaluation = spec.evaluation
    if evaluation is None:
        return []
    placement = spec.model_dump(by_alias=True, mode="json", exclude_none=True, include=set(api.Placement.model_fields))
    # Inference: one pod, evaluation.gpu GPUs (sharded evaluation), else one GPU at most (unset:
    # the runtime's default, of which an EvalJob takes at most one).
    gpu = evaluation.gpu if evaluation.gpu is not None else (min(spec.resources.gpu, 1) if spec.resources.gpu is not None else None)
    placement["resources"].update(nodes=1, **({"gpu": gpu} if gpu is not None else {}))
    models = [{"name": "base", "path": spec.model.path, "dtype": spec.model.dtype.value},
              {"name": "tuned", "fineTuneJob": meta["name"], "dtype": spec.model.dtype.value}]
    scores_name, retention_name = evaluation_job_names(meta["name"])
    bodies = [(scores_name, {**evaluation.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"retention", "gpu"}),
                             **tracking.evaluation_spec(spec.tracking)}, layout.EVAL_DIR)]
    if evaluation.retention:
        bodies.append((retention_name, {"dataset": evaluation.retention.model_dump(by_alias=True, mode="json", exclude_none=True),
                                        "task": "perplexity", "metrics": ["perplexity"]}, layout.RETENTION_DIR))
    return [{
        "apiVersion": api.API_VERSION,
        "kind": "EvalJob",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {FINETUNE.label: meta["name"], LABEL_MANAGED_BY: "kubetune"},
            "ownerReferences": [owner_reference(meta, FINETUNE)],
        },
        "spec": {**body, **placement, "models": models, "output": {"path": evaluation_output(spec, subdir)}},
    } for name, body, subdir in bodies]


def evaluation_output(spec: api.FineTuneJobSpec, subdir: str) -> str:
    """Where an evaluation EvalJob (layout.EVAL_DIR or RETENTION_DIR) writes: under the job's output."""
    return layout.join(spec.output.path, subdir)


def promote_config(meta: dict[str, Any], spec: api.FineTuneJobSpec, status: dict[str, Any],
                   rules: list[dict[str, Any]]) -> PromoteConfig:
    """What the promotion pod copies: the adapter or model (with its tokenizer), the model card,
    the training summary, the evaluation's scores, and a record of the gate and lineage. Every
    path comes from the spec's output.path and the layout, none from what a pod reported."""
    output = spec.output.path
    files = {layout.MODEL_CARD: layout.join(output, layout.MODEL_CARD), layout.SUMMARY: layout.join(output, layout.SUMMARY),
             layout.SCORES: layout.join(evaluation_output(spec, layout.EVAL_DIR), layout.SCORES)}
    if spec.evaluation is not None and spec.evaluation.retention is not None:
        files["retention_scores.json"] = layout.join(evaluation_output(spec, layout.RETENTION_DIR), layout.SCORES)
    record = {"fineTuneJob": {k: meta[k] for k in ("namespace", "name", "uid")}, "rules": rules,
              "evaluation": status.get("evaluation") or {}, "lineage": status.get("lineage") or {}}
    return PromoteConfig(
        model_path=layout.trained_model(output, spec.method, spec.lora.merge_on_save),
        adapter=not produces_full_model(spec.method, spec.lora.merge_on_save),
        base_model=spec.model if spec.promotion.merge_adapter else None, merge_adapter=spec.promotion.merge_adapter,
        export=spec.promotion.export, files=files, destination=spec.promotion.destination, record=record, tracking=spec.tracking)


def promotion_children(meta: dict[str, Any], spec: api.FineTuneJobSpec, config: PromoteConfig,
                       default_image: str = api.DEFAULT_IMAGE, runtime: Optional[RuntimeSpec] = None) -> list[dict[str, Any]]:
    """The promotion pod's ConfigMap and Job: the trainer's image, volumes, placement and
    runtime, no GPU (copying and merging run on CPU) and no retry."""
    placement = spec.model_copy(update={"resources": spec.resources.model_copy(update={"gpu": 0, "nodes": 1}), "backoff_limit": 0})
    return [config_map(meta, PROMOTE, config), job(meta, PROMOTE, placement, default_image, runtime=runtime)]
