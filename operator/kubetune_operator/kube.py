"""The operator's Kubernetes calls, in one thin module (everything else is pure)."""
from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any, Callable, Optional

import kubernetes
from kubernetes.client.rest import ApiException

import kubetune_api as api

log = logging.getLogger(__name__)


class OwnedByOther(Exception):
    """A child's name is taken by an object this FineTuneJob does not own."""


def load_config() -> None:
    """In-cluster credentials in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    kubernetes.config.load_config()


def _create_and_read(kind: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    core = kubernetes.client.CoreV1Api()
    rbac = kubernetes.client.RbacAuthorizationV1Api()
    batch = kubernetes.client.BatchV1Api()
    custom = kubernetes.client.CustomObjectsApi()
    return {
        "ConfigMap": (core.create_namespaced_config_map, core.read_namespaced_config_map),
        "ServiceAccount": (core.create_namespaced_service_account, core.read_namespaced_service_account),
        "Role": (rbac.create_namespaced_role, rbac.read_namespaced_role),
        "RoleBinding": (rbac.create_namespaced_role_binding, rbac.read_namespaced_role_binding),
        "Job": (batch.create_namespaced_job, batch.read_namespaced_job),
        "EvalJob": (partial(custom.create_namespaced_custom_object, api.GROUP, api.VERSION, plural=api.EVALJOB_PLURAL),
                    partial(custom.get_namespaced_custom_object, api.GROUP, api.VERSION, plural=api.EVALJOB_PLURAL)),
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
    owner_uid = meta["ownerReferences"][0]["uid"]
    if not any(ref.get("uid") == owner_uid for ref in existing["metadata"].get("ownerReferences") or []):
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


def list_pods(namespace: str, label_selector: str) -> list[dict[str, Any]]:
    return _raw(kubernetes.client.CoreV1Api().list_namespaced_pod, namespace=namespace,
                label_selector=label_selector).get("items", [])


def read_object(plural: str, namespace: str, name: str) -> Optional[dict[str, Any]]:
    """A FineTuneJob or EvalJob, or None when it does not exist."""
    try:
        return kubernetes.client.CustomObjectsApi().get_namespaced_custom_object(
            api.GROUP, api.VERSION, namespace, plural, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def patch_status(plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """A JSON merge patch of the status subresource (a dict body is sent as merge-patch)."""
    kubernetes.client.CustomObjectsApi().patch_namespaced_custom_object_status(
        api.GROUP, api.VERSION, namespace, plural, name, {"status": status})


def stop_job(namespace: str, name: str) -> None:
    """Stops a Job from starting more pods (parallelism 0) while keeping it and its pods' logs."""
    kubernetes.client.BatchV1Api().patch_namespaced_job(name, namespace, {"spec": {"parallelism": 0}})
