"""kopf handlers: FineTuneJob -> child objects, and Job/pod state -> FineTuneJob status.

Handlers are thin: validation lives in `preflight`, object shapes in `builders`, state
decisions in `observe`, API calls in `kube`.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any

import kopf

from kubetune_operator import api, builders, kube, metrics, observe, preflight
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
FTJ = (api.GROUP, api.VERSION, api.FINETUNEJOB_PLURAL)
OWNED = {builders.LABEL_JOB: kopf.PRESENT}
SUCCEEDED = observe.SUCCEEDED

# Job and pod events for one FineTuneJob arrive on different workers: serialize the
# read-decide-patch cycle per job so an event or a histogram sample is never doubled.
_sync_locks: defaultdict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_: Any) -> None:
    config: OperatorSettings = memo.config
    kube.load_config()
    # Our own prefix for everything kopf stores on objects, and no finalizer: children go
    # by garbage collection, so deleting a FineTuneJob never waits on the operator.
    settings.persistence.finalizer = "kubetune.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io", key="last-handled-configuration")
    settings.posting.reporting_component = "kubetune-operator"
    settings.posting.level = logging.WARNING  # our own events say what happened; not kopf's log
    logging.getLogger("kubetune").setLevel(logging.INFO)
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
        logger.info(f"serving Prometheus metrics on {config.metrics_address}:{config.metrics_port}/metrics")


def _fail_without_launch(body: kopf.Body, reason: str, message: str) -> None:
    now = _now()
    generation = body["metadata"].get("generation")
    conditions = observe.upsert_condition(list(body.get("status", {}).get("conditions") or []),
                                          SUCCEEDED, "False", reason, message, generation, now)
    kube.patch_finetunejob_status(body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Failed.value, "conditions": conditions, "message": message,
        "completionTime": now, "observedGeneration": generation,
    })
    kopf.event(body, type="Warning", reason=reason, message=message)


@kopf.on.resume(*FTJ)
@kopf.on.create(*FTJ)
def launch(body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, status: kopf.Status, memo: kopf.Memo, logger, **_: Any) -> None:
    """Validates the spec, then creates (or finds) the ConfigMap, RBAC and Job."""
    if status.get("phase") in (api.Phase.Succeeded.value, api.Phase.Failed.value):
        return
    try:
        parsed = preflight.validate(meta["name"], dict(spec), check_files=memo.config.preflight_files)
    except preflight.Invalid as invalid:
        logger.warning(f"refusing {meta['namespace']}/{meta['name']}: {invalid.reason}: {invalid}")
        _fail_without_launch(body, invalid.reason, str(invalid))
        return
    owner = {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}
    for child in builders.children(owner, parsed):
        try:
            created = kube.ensure(child)
        except kube.OwnedByOther as clash:
            raise kopf.TemporaryError(str(clash), delay=15)
        if created and child["kind"] == "Job":
            kopf.event(body, type="Normal", reason="JobCreated", message=f"created Job {child['metadata']['name']}")
    sync(meta["namespace"], meta["name"])


@kopf.on.update(*FTJ, field="spec")
def spec_changed(body: kopf.Body, **_: Any) -> None:
    kopf.event(body, type="Warning", reason="SpecImmutable",
              message="spec changes after creation are not applied; delete and re-create the FineTuneJob to change it")


@kopf.on.event("batch", "v1", "jobs", labels=OWNED)
def job_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    sync(namespace, meta["labels"][builders.LABEL_JOB])


@kopf.on.event("", "v1", "pods", labels=OWNED)
def pod_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    sync(namespace, meta["labels"][builders.LABEL_JOB])


@kopf.on.event(*FTJ)
def finetunejob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget_finetunejob(namespace, name)
        _sync_locks.pop((namespace, name), None)
    else:
        metrics.observe_finetunejob(namespace, name, dict(status))


def _status_patch(ftj: dict[str, Any], seen: observe.Observation) -> dict[str, Any]:
    status = ftj.get("status") or {}
    generation = ftj["metadata"].get("generation")
    conditions = observe.upsert_condition(list(status.get("conditions") or []), SUCCEEDED,
                                          seen.condition_status, seen.reason, seen.message, generation, _now())
    patch: dict[str, Any] = {
        "phase": seen.phase.value,
        "conditions": conditions,
        "message": seen.message,
        "observedGeneration": generation,
        "jobName": builders.child_name(ftj["metadata"]["name"]),
    }
    if seen.start_time:
        patch["startTime"] = seen.start_time
    if seen.completion_time:
        patch["completionTime"] = seen.completion_time
    # The termination message is the fallback when the trainer's own status patches failed.
    for key in ("metrics", "artifacts", "progress"):
        if seen.report.get(key) and not status.get(key):
            patch[key] = seen.report[key]
    return patch


def _changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    def essence(status: dict[str, Any]) -> Any:
        cond = next((c for c in status.get("conditions") or [] if c.get("type") == SUCCEEDED), {})
        return ({k: status.get(k) for k in patch if k != "conditions"},
                {k: cond.get(k) for k in ("status", "reason", "message", "observedGeneration")})
    return essence(current) != essence({**current, **patch})


def sync(namespace: str, name: str) -> None:
    """Reads the FineTuneJob's Job and pods and writes what they say into its status."""
    with _sync_locks[(namespace, name)]:
        ftj = kube.read_finetunejob(namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp"):
            return
        current = ftj.get("status") or {}
        if current.get("phase") in (api.Phase.Succeeded.value, api.Phase.Failed.value):
            return  # final: nothing that happens to the children changes the outcome
        job = kube.read_job(namespace, builders.child_name(name))
        pods = kube.list_pods(namespace, f"{builders.LABEL_JOB}={name}")
        seen = observe.observe(job, pods)
        patch = _status_patch(ftj, seen)
        if not _changed(current, patch):
            return
        kube.patch_finetunejob_status(namespace, name, patch)
        previous_reason = next((c.get("reason") for c in current.get("conditions") or [] if c.get("type") == SUCCEEDED), None)
        if seen.reason != previous_reason:
            log.info(f"{namespace}/{name}: {seen.phase.value} ({seen.reason}): {seen.message}")
            event_type = "Warning" if seen.phase == api.Phase.Failed or seen.reason in observe.WARNING_REASONS else "Normal"
            kopf.event(ftj, type=event_type, reason=seen.reason, message=seen.message)
        if seen.phase in api.TERMINAL_PHASES and seen.start_time and seen.completion_time:
            metrics.observe_duration(seen.phase.value, (_parse_time(seen.completion_time) - _parse_time(seen.start_time)).total_seconds())
