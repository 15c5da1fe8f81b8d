"""The serving hand-off of a promoted FineTuneJob (spec.promotion.serve): KServe's
InferenceService, found by API discovery, created or updated once the model is promoted, and
its readiness mirrored into the Serving condition and status.serving. Without KServe the
condition says so and the job stays Succeeded.

The InferenceService's status is written by KServe (or by anyone who may write it): it is
bounded and validated here and only ever displayed, never acted on beyond the condition.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Optional
from urllib.parse import urlsplit

import kopf
from kubernetes.client.rest import ApiException

import kubetune_api as api
from kubetune_api.serving import (ADAPTER_MOUNT, BASE_MOUNT, KSERVE_API, KSERVE_GROUP, KSERVE_KIND, KSERVE_PLURAL, KSERVE_VERSION,
                                  MAX_URL, ServeSpec, served_model, serve_name)
from kubetune_operator import builders, conditions, kube, shared
from kubetune_operator.builders import FINETUNE, LABEL_COMPONENT, LABEL_MANAGED_BY
from kubetune_operator.promotion import Verdict  # (status, reason, message) of a condition

log = logging.getLogger("kubetune.operator")
SERVING = api.CONDITION_SERVING
PROMOTED = api.CONDITION_PROMOTED
# Its own label (not FINETUNE's): KServe copies an InferenceService's labels onto its pods,
# which must never count as the training job's.
LABEL_SERVING = "kubetune.io/serving"
ANNOTATION_DIGEST = "kubetune.io/serving-digest"
COMPONENT = "serving"
# How long API discovery's answer is trusted: KServe installed later is found this much later.
DISCOVERY_SECONDS = 30.0
MAX_TEXT = 512  # KServe's reason and message, as the condition repeats them
STALLED = {api.Reason.KServeNotInstalled.value, api.Reason.ServingConflict.value, api.Reason.ServingRejected.value,
           api.Reason.ServingFailed.value}


# ---- building (pure) ----

def inference_service(meta: dict[str, Any], spec: api.FineTuneJobSpec) -> dict[str, Any]:
    """The InferenceService of a FineTuneJob's promotion.serve: KServe's Hugging Face runtime
    (modelFormat huggingface) with the chosen backend; an unmerged LoRA adapter is fetched next
    to its base model (storageUris) and served as a vLLM LoRA module named like the service."""
    serve = spec.promotion.serve
    served, name = served_model(spec), serve_name(meta["name"], serve)
    model: dict[str, Any] = {"modelFormat": {"name": "huggingface"},
                             "args": [f"--model_name={name}", f"--backend={serve.runtime.value}"]}
    predictor: dict[str, Any] = {"model": model}
    if served.adapter:
        model["args"] = [f"--model_name={name}-base", f"--backend={serve.runtime.value}", f"--model_dir={BASE_MOUNT}",
                         "--enable-lora", f"--lora-modules={name}={ADAPTER_MOUNT}"]
        predictor["storageUris"] = [{"uri": served.base_uri, "mountPath": BASE_MOUNT},
                                    {"uri": served.uri, "mountPath": ADAPTER_MOUNT}]
    else:
        model["storageUri"] = served.uri
    resources = builders.container_resources(serve.resources)
    if resources:
        model["resources"] = resources
    metadata = {"name": name, "namespace": meta["namespace"],
                "labels": {LABEL_SERVING: meta["name"], LABEL_COMPONENT: COMPONENT, LABEL_MANAGED_BY: "kubetune"},
                "ownerReferences": [] if serve.keep else [builders.owner_reference(meta, FINETUNE)]}
    # What the operator set, as a digest: KServe's defaulting and the API server's quantity
    # normalization change the object itself, so comparing it would ask for an update every time.
    metadata["annotations"] = {ANNOTATION_DIGEST: shared.digest({"metadata": metadata, "spec": {"predictor": predictor}})}
    return {"apiVersion": f"{KSERVE_GROUP}/{KSERVE_VERSION}", "kind": KSERVE_KIND, "metadata": metadata,
            "spec": {"predictor": predictor}}


def update_patch(current: dict[str, Any], wanted: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The merge patch that makes `current` the wanted InferenceService (null removes what a
    previous promotion set), or None when the operator already set it so (the same digest)."""
    annotations = (current.get("metadata") or {}).get("annotations") or {}
    if annotations.get(ANNOTATION_DIGEST) == wanted["metadata"]["annotations"][ANNOTATION_DIGEST]:
        return None
    predictor = wanted["spec"]["predictor"]
    model = {"storageUri": None, "resources": None, **predictor["model"]}
    meta = wanted["metadata"]
    return {"metadata": {k: meta[k] for k in ("labels", "annotations", "ownerReferences")},
            "spec": {"predictor": {"model": model, "storageUris": predictor.get("storageUris")}}}


def foreign(current: dict[str, Any], uid: str) -> Optional[str]:
    """Why an existing InferenceService is not this FineTuneJob's to update, or None: kubetune
    made it (its labels) and no one else controls it (a kept one, or this job's own)."""
    meta = current.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_MANAGED_BY) != "kubetune" or LABEL_SERVING not in (meta.get("labels") or {}):
        return "was not created by kubetune"
    controller = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("controller")), None)
    if controller is not None and controller.get("uid") != uid:
        return f"is owned by {controller.get('kind', '?')} {controller.get('name', '?')}"
    return None


# ---- reading KServe's status (untrusted, pure) ----

def _text(value: Any) -> str:
    return "".join(ch for ch in str(value if value is not None else "") if ch.isprintable())[:MAX_TEXT]


def valid_url(value: Any) -> Optional[str]:
    """An http(s) URL of at most MAX_URL characters, else None."""
    if not isinstance(value, str) or len(value) > MAX_URL or any(not ch.isprintable() or ch.isspace() for ch in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.netloc else None


def readiness(isvc: dict[str, Any], name: str, uri: str) -> tuple[Verdict, dict[str, Any]]:
    """The Serving condition and status.serving from an InferenceService's status."""
    status = isvc.get("status") if isinstance(isvc.get("status"), dict) else {}
    found = status.get("conditions") if isinstance(status.get("conditions"), list) else []
    ready = next((c for c in found if isinstance(c, dict) and c.get("type") == "Ready"), {})
    url = valid_url(status.get("url"))
    generation, observed = (isvc.get("metadata") or {}).get("generation"), status.get("observedGeneration")
    if isinstance(generation, int) and isinstance(observed, int) and observed < generation:
        ready = {}  # KServe has not yet seen the latest spec: its Ready is about the one before
    summary = {"name": name, **({"url": url} if url else {}), "ready": ready.get("status") == conditions.TRUE}
    if summary["ready"]:
        return (conditions.TRUE, api.Reason.Serving.value, f"InferenceService {name} serves {uri}" + (f" at {url}" if url else "")), summary
    if ready.get("status") == conditions.FALSE:
        why = ": ".join(part for part in (_text(ready.get("reason")), _text(ready.get("message"))) if part)
        return (conditions.FALSE, api.Reason.ServingFailed.value, f"InferenceService {name} is not Ready: {why or 'no reason given'}"), summary
    return (conditions.UNKNOWN, api.Reason.ServingPending.value, f"InferenceService {name} serves {uri}; waiting for KServe to report it Ready"), summary


# ---- acting ----

class _Discovery:
    """API discovery of KServe's InferenceService, trusted for DISCOVERY_SECONDS."""

    def __init__(self) -> None:
        self.lock, self.at, self.served = threading.Lock(), float("-inf"), False

    def installed(self) -> bool:
        with self.lock:
            if time.monotonic() - self.at > DISCOVERY_SECONDS:
                self.served, self.at = kube.api_served(KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL), time.monotonic()
            return self.served

    def forget(self) -> None:
        with self.lock:
            self.at = float("-inf")


discovery = _Discovery()


def awaiting(spec: Any, status: Any) -> bool:
    """Whether a FineTuneJob's serving still needs the operator: promoted, with serve, not Ready."""
    promotion, job = (spec or {}).get("promotion") or {}, {"status": status}
    return promotion.get("serve") is not None and conditions.is_true(job, PROMOTED) and not conditions.is_true(job, SERVING)


class _Looks:
    """When each stalled job's serving was last looked at: waiting on someone else (an admin to
    install KServe, a user to rename or fix, KServe to recover), it is looked at only every
    `seconds`, not at every tick of the timer."""

    def __init__(self) -> None:
        self.lock, self.at = threading.Lock(), {}

    def due(self, namespace: str, name: str, status: Any, seconds: float) -> bool:
        if conditions.reason_of({"status": status}, SERVING) not in STALLED:
            return True
        with self.lock:
            now = time.monotonic()
            if now - self.at.get((namespace, name), float("-inf")) < seconds:
                return False
            self.at[(namespace, name)] = now
            return True


looks = _Looks()


def _api_message(exc: ApiException) -> str:
    try:
        return _text(json.loads(exc.body or "{}").get("message")) or _text(exc.reason)
    except (ValueError, AttributeError):
        return _text(exc.reason)


def _apply(ftj: dict[str, Any], wanted: dict[str, Any], uri: str) -> tuple[Verdict, dict[str, Any]]:
    meta, name = wanted["metadata"], wanted["metadata"]["name"]
    if not discovery.installed():
        return (conditions.FALSE, api.Reason.KServeNotInstalled.value,
                f"the cluster does not serve {KSERVE_API} (KServe is not installed): {uri} is promoted but not served"), {"name": name}
    try:
        current = kube.read_custom(KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL, meta["namespace"], name)
        if current is None:
            kube.create_custom(KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL, wanted)
            kopf.event(ftj, type="Normal", reason="InferenceServiceCreated", message=f"created InferenceService {name} for {uri}")
            return readiness({}, name, uri)  # just made: nothing KServe said yet is about it
        why = foreign(current, ftj["metadata"]["uid"])
        if why:
            return (conditions.FALSE, api.Reason.ServingConflict.value,
                    f"InferenceService {name} exists and {why}: it is left alone; set promotion.serve.name to another name"), {"name": name}
        if (patch := update_patch(current, wanted)) is not None:
            kube.patch_custom(KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL, meta["namespace"], name, patch)
            kopf.event(ftj, type="Normal", reason="InferenceServiceUpdated", message=f"updated InferenceService {name} to serve {uri}")
            return readiness({}, name, uri)  # its status is still about the model before
    except ApiException as exc:
        if exc.status == 404:  # the CRD went away since discovery
            discovery.forget()
        if exc.status is None or exc.status >= 500:
            raise
        return (conditions.FALSE, api.Reason.ServingRejected.value,
                f"the API server refused InferenceService {name} ({exc.status}): {_api_message(exc)}"), {"name": name}
    return readiness(current, name, uri)


def sync(namespace: str, name: str) -> None:
    """Creates or updates a promoted FineTuneJob's InferenceService and mirrors its readiness
    (idempotent; called when the promotion succeeds and by a timer until it is Ready)."""
    with shared.lock(FINETUNE.kind, namespace, name):
        ftj = kube.read_object(FINETUNE.plural, namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp") or not awaiting(ftj["spec"], ftj.get("status") or {}):
            return
        spec = api.FineTuneJobSpec.model_validate(ftj["spec"])
        wanted = inference_service(ftj["metadata"], spec)
        uri = served_model(spec).uri
        verdict, summary = _apply(ftj, wanted, uri)
        patch = {"serving": summary, "conditions": conditions.updated(ftj, (SERVING, *verdict))}
        if not shared.changed(ftj.get("status") or {}, patch):
            return
        kube.patch_status(FINETUNE.plural, namespace, name, patch)
        if verdict[1] != conditions.reason_of(ftj, SERVING):
            log.info(f"FineTuneJob {namespace}/{name}: {verdict[1]}: {verdict[2]}")
            kopf.event(ftj, type="Warning" if verdict[0] == conditions.FALSE else "Normal", reason=verdict[1], message=verdict[2])
