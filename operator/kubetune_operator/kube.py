"""The operator's Kubernetes calls, in one thin module (everything else is pure)."""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from typing import Any, Callable, Optional

import kubernetes
from kubernetes.client.rest import ApiException

import kubetune_api as api
from kubetune_api import wire
from kubetune_operator import builders

log = logging.getLogger(__name__)


class OwnedByOther(Exception):
    """A child's name is taken by an object this FineTuneJob does not own."""


def load_config() -> None:
    """In-cluster credentials in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config); one
    shared client for every call, so requests reuse its connection pool instead of a new TLS
    connection each (thread-safe: urllib3's pool)."""
    kubernetes.config.load_config()
    kubernetes.client.ApiClient.set_default(kubernetes.client.ApiClient())


def _create_and_read(kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    core = kubernetes.client.CoreV1Api()
    networking = kubernetes.client.NetworkingV1Api()
    batch = kubernetes.client.BatchV1Api()
    custom = kubernetes.client.CustomObjectsApi()
    return {
        "ConfigMap": (core.create_namespaced_config_map, core.read_namespaced_config_map),
        "Service": (core.create_namespaced_service, core.read_namespaced_service),
        "NetworkPolicy": (networking.create_namespaced_network_policy, networking.read_namespaced_network_policy),
        "Job": (batch.create_namespaced_job, batch.read_namespaced_job),
        "EvalJob": (partial(custom.create_namespaced_custom_object, api.GROUP, api.VERSION, plural=api.EVALJOB_PLURAL),
                    partial(custom.get_namespaced_custom_object, api.GROUP, api.VERSION, plural=api.EVALJOB_PLURAL)),
        # scheduler-plugins' PodGroup of a coscheduled multi-node attempt (gang.py).
        "PodGroup": (partial(custom.create_namespaced_custom_object, "scheduling.x-k8s.io", "v1alpha1", plural="podgroups"),
                     partial(custom.get_namespaced_custom_object, "scheduling.x-k8s.io", "v1alpha1", plural="podgroups")),
    }[kind]


def ensure(obj: dict[str, Any]) -> bool:
    """Creates obj unless it exists; True when created. Raises OwnedByOther on a name clash."""
    create, read = _create_and_read(obj["kind"])
    meta = obj["metadata"]
    try:
        create(namespace=meta["namespace"], body=obj)
        return True
    except ApiException as exc:
        if exc.status != 409:
            raise
    existing = kubernetes.client.ApiClient().sanitize_for_serialization(read(name=meta["name"], namespace=meta["namespace"]))
    if not builders.owned_by(existing, meta["ownerReferences"][0]["uid"]):
        raise OwnedByOther(f"{obj['kind']} {meta['namespace']}/{meta['name']} exists and is not owned by this FineTuneJob")
    return False


def _raw(call: Callable[..., Any], **kwargs: Any) -> dict[str, Any]:
    """The API server's own JSON (timestamps stay RFC 3339 with Z, as in every other status)."""
    return json.loads(call(_preload_content=False, **kwargs).data)


def read_job(namespace: str, name: str) -> Optional[dict[str, Any]]:
    try:
        return _raw(kubernetes.client.BatchV1Api().read_namespaced_job, name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def list_jobs(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """A job's batch/v1 Jobs (every attempt and rank), from the watch cache as list_pods."""
    return _raw(kubernetes.client.BatchV1Api().list_namespaced_job, namespace=namespace,
                label_selector=label_selector, resource_version="0").get("items", [])


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """A job's pods from the API server's watch cache (resourceVersion 0): a quorum read would
    scan the whole namespace in etcd on every event. A cached list may trail by a moment; the
    event that moved it on triggers another sync."""
    return _raw(kubernetes.client.CoreV1Api().list_namespaced_pod, namespace=namespace,
                label_selector=label_selector, resource_version="0").get("items", [])


def read_pod_log(namespace: str, pod: str, container: str, tail_lines: int, limit_bytes: int) -> str:
    """The last `tail_lines` lines of a container's log, at most `limit_bytes` of them."""
    response = kubernetes.client.CoreV1Api().read_namespaced_pod_log(
        pod, namespace, container=container, tail_lines=tail_lines, limit_bytes=limit_bytes,
        _preload_content=False, _request_timeout=10)
    return response.data.decode("utf-8", errors="replace")


def read_object(plural: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
    """A FineTuneJob or EvalJob, or None when it does not exist."""
    try:
        return kubernetes.client.CustomObjectsApi().get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


# The status webhook is the operator's own: while it starts (or restarts) the API server cannot
# reach it for a moment and refuses the operator's own status writes. Those are tried again.
WEBHOOK_RETRIES, WEBHOOK_RETRY_SECONDS = 20, 0.5


def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """A JSON merge patch of the status subresource (a dict body is sent as merge-patch)."""
    for attempt in range(WEBHOOK_RETRIES + 1):
        try:
            kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object_status(
                api.GROUP, api.VERSION, namespace, plural, name, {"status": status})
            return
        except ApiException as exc:
            if exc.status != 500 or "failed calling webhook" not in (exc.body or "") or attempt == WEBHOOK_RETRIES:
                raise
            time.sleep(WEBHOOK_RETRY_SECONDS)


def stop_job(namespace: str, name: str) -> None:
    """Stops a Job from starting more pods (parallelism 0) while keeping it and its pods' logs."""
    kubernetes.client.BatchV1Api().patch_namespaced_job(name, namespace, {"spec": {"parallelism": 0}})


def delete_job(namespace: str, name: str) -> None:
    """Deletes a Job and, in the background, its pods (they get their grace period); gone is fine."""
    try:
        kubernetes.client.BatchV1Api().delete_namespaced_job(name, namespace, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def delete_object(plural: str, namespace: str, name: str) -> None:
    """Deletes a FineTuneJob or EvalJob (its children go by garbage collection); gone is fine."""
    try:
        kubernetes.client.CustomObjectsApi().delete_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, plural, name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


def failed_create_events(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Job controller's FailedCreate events for this Job (why its pod does not exist)."""
    meta = job["metadata"]
    selector = f"involvedObject.uid={meta['uid']},reason=FailedCreate"
    return _raw(kubernetes.client.CoreV1Api().list_namespaced_event, namespace=meta["namespace"],
                field_selector=selector).get("items", [])


def server_version() -> tuple[int, int]:
    """The API server's (major, minor) version, e.g. (1, 20); a provider's "27+" reads as 27."""
    info = kubernetes.client.VersionApi().get_code()
    return int("".join(c for c in info.major if c.isdigit())), int("".join(c for c in info.minor if c.isdigit()))


def kueue_workload(job: dict[str, Any]) -> Optional[dict[str, Any]]:
    """Kueue's Workload for a Job (labelled with the Job's uid), or None: none yet, or no Kueue
    (its API is absent) or no permission to read it."""
    try:
        items = kubernetes.client.CustomObjectsApi().list_namespaced_custom_object(
            "kueue.x-k8s.io", "v1beta1", job["metadata"]["namespace"], "workloads",
            label_selector=f"kueue.x-k8s.io/job-uid={job['metadata']['uid']}").get("items", [])
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    return items[0] if items else None


def read_runtime(kind: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
    """A ClusterTrainingRuntime, or a TrainingRuntime in `namespace`; None when it does not exist.
    Read on every admission and launch (no cache): a runtime changed or deleted counts at once."""
    custom = kubernetes.client.CustomObjectsApi()
    try:
        if kind == wire.CLUSTER_RUNTIME_KIND:
            return custom.get_cluster_custom_object(api.GROUP, api.VERSION, wire.CLUSTER_RUNTIME_PLURAL, name,
                                                    _request_timeout=5)
        return custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, wire.RUNTIME_PLURAL, name,
                                                   _request_timeout=5)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def namespace_labels(name: str) -> dict[str, str]:
    """A namespace's labels (a ClusterTrainingRuntime's namespaceSelector matches them)."""
    namespace = kubernetes.client.CoreV1Api().read_namespace(name, _request_timeout=5)
    return dict(namespace.metadata.labels or {})


def api_served(group: str, version: str, plural: str) -> bool:
    """Whether the API server serves `plural` in group/version (API discovery; any
    authenticated client may read it): False when the group/version is absent."""
    try:
        found = kubernetes.client.CustomObjectsApi().get_api_resources(group, version, _request_timeout=5)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(resource.name == plural for resource in found.resources or [])


def read_custom(group: str, version: str, plural: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
    """Another operator's custom object (a KServe InferenceService), or None when absent."""
    try:
        return kubernetes.client.CustomObjectsApi().get_namespaced_custom_object(group, version, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def create_custom(group: str, version: str, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
    return kubernetes.client.CustomObjectsApi().create_namespaced_custom_object(
        group, version, obj["metadata"]["namespace"], plural, obj)


def patch_custom(group: str, version: str, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (a dict body is sent as merge-patch; null removes a field)."""
    return kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object(group, version, namespace, plural, name, patch)
