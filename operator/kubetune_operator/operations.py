"""Operations around a job's attempts: spec.suspend, ttlSecondsAfterFinished, the one spec
change that is allowed, and a timer for jobs whose pod the cluster refuses to create."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import kopf

import kubetune_api as api
from kubetune_operator import attempts, builders, handlers, kube, ledger, preflight, shared
from kubetune_operator.builders import EVAL, FINETUNE, Workload
from kubetune_operator.handlers import EVJ, FINAL, FTJ, SUCCEEDED, SUSPENDED

log = logging.getLogger("kubetune.operator")
WORKLOADS = {FINETUNE.kind: FINETUNE, EVAL.kind: EVAL}
# How often a finished job with a TTL checks its expiry, and a job without a pod its Job's events.
TTL_CHECK_SECONDS = 5.0
POD_CHECK_SECONDS = 15.0
# Pending reasons under which the pod may never come: the Job's FailedCreate events say why.
_AWAITING_POD = {api.Reason.JobCreated.value, api.Reason.QuotaExceeded.value}


def _usage(obj: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    settings, status = shared.config.settings, obj.get("status") or {}
    tokens = (status.get("progress") or {}).get("trainTokens")
    return ledger.usage(records, tokens, settings.gpu_hour_price, settings.currency)


def suspend_or_resume(workload: Workload, obj: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """spec.suspend true: deletes the running attempt's Job (its pods stop) and records phase
    Suspended. Back to false: starts the next attempt, which resumes from the latest checkpoint.
    The ledger keeps the stopped pods' time, so usage adds up over every run."""
    meta, status = obj["metadata"], obj.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    attempt = status.get("attempt") or 1
    base = builders.child_name(name, workload)
    patch: dict[str, Any] = {"pods": records, "usage": _usage(obj, records), "observedGeneration": meta.get("generation")}
    if obj["spec"].get("suspend"):
        if status.get("jobName"):
            kube.delete_job(namespace, attempts.job_name(base, attempt))
        message = "suspended: the pods are stopped; set spec.suspend to false to resume from the latest checkpoint"
        patch.update(phase=api.Phase.Suspended.value, message=message,
                     conditions=_with(obj, (SUSPENDED, "True", api.Reason.Suspended.value, message),
                                      (SUCCEEDED, "Unknown", api.Reason.Suspended.value, message)))
        reason = api.Reason.Suspended.value
    else:
        attempt = attempt + 1 if status.get("jobName") else attempt
        handlers.start_attempt(workload, obj, attempt)
        message = f"resumed: attempt {attempt} continues from the latest checkpoint"
        patch.update(phase=api.Phase.Pending.value, message=message, attempt=attempt,
                     jobName=attempts.job_name(base, attempt),
                     conditions=_with(obj, (SUSPENDED, "False", api.Reason.Resumed.value, message),
                                      (SUCCEEDED, "Unknown", api.Reason.JobCreated.value, message)))
        reason = api.Reason.Resumed.value
    if not shared.changed(status, patch):
        return
    kube.patch_status(workload.plural, namespace, name, patch)
    if shared.reason_of(obj, SUSPENDED) != reason:
        log.info(f"{workload.kind} {namespace}/{name}: {message}")
        kopf.event(obj, type="Normal", reason=reason, message=message)


def _with(obj: dict[str, Any], *updates: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    """obj's conditions with each (type, status, reason, message) set."""
    current = dict(obj)
    for ctype, status, reason, message in updates:
        current = {**current, "status": {**(current.get("status") or {}),
                                         "conditions": shared.conditions(current, ctype, status, reason, message)}}
    return current["status"]["conditions"]


@kopf.on.field(*FTJ, field="spec.suspend")
@kopf.on.field(*EVJ, field="spec.suspend")
def suspend_changed(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    handlers.sync(WORKLOADS[body["kind"]], namespace, name)


@kopf.on.update(*FTJ, field="spec")
@kopf.on.update(*EVJ, field="spec")
def spec_changed(body: kopf.Body, old: Any, new: Any, **_: Any) -> None:
    """The admission webhook refuses spec changes; without it, they are ignored, and said so."""
    fields = preflight.immutable_changes(dict(old or {}), dict(new or {}))
    if fields:
        kopf.event(body, type="Warning", reason="SpecImmutable",
                   message=f"spec changes after creation are not applied ({', '.join(fields)}); only spec.suspend may "
                           f"change: delete and re-create the {body['kind']} to change the rest")


def _settled(status: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Finished, with the evaluation and promotion that follow training decided too."""
    if status.get("phase") not in FINAL:
        return False
    follow = [(api.CONDITION_EVALUATED, "evaluation"), (api.CONDITION_PROMOTED, "promotion")]
    decided = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return all(decided.get(ctype) in ("True", "False") for ctype, key in follow
               if spec.get(key) and status.get("phase") == api.Phase.Succeeded.value)


def _expiring(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    return spec.get("ttlSecondsAfterFinished") is not None and _settled(dict(status), dict(spec))


@kopf.timer(*FTJ, interval=TTL_CHECK_SECONDS, when=_expiring)
@kopf.timer(*EVJ, interval=TTL_CHECK_SECONDS, when=_expiring)
def expire(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, namespace: str, name: str, **_: Any) -> None:
    """Deletes a settled job ttlSecondsAfterFinished after it finished; its children go by
    garbage collection, files on volumes stay."""
    finished = status.get("completionTime")
    if not finished:
        return
    finished_at = max([shared.parse_time(finished)] + [shared.parse_time(c["lastTransitionTime"])
                      for c in status.get("conditions") or [] if c.get("lastTransitionTime")])
    if shared.parse_time(shared.now()) >= finished_at + timedelta(seconds=spec["ttlSecondsAfterFinished"]):
        log.info(f"{body['kind']} {namespace}/{name}: deleting, {spec['ttlSecondsAfterFinished']} s after it finished")
        kube.delete_object(WORKLOADS[body["kind"]].plural, namespace, name)


def _awaiting_pod(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == api.Phase.Pending.value and shared.reason_of({"status": dict(status)}, SUCCEEDED) in _AWAITING_POD


@kopf.timer(*FTJ, interval=POD_CHECK_SECONDS, when=_awaiting_pod)
@kopf.timer(*EVJ, interval=POD_CHECK_SECONDS, when=_awaiting_pod)
def check_pod_creation(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """A Job whose pod is refused changes no object the operator watches: look again."""
    handlers.sync(WORKLOADS[body["kind"]], namespace, name)
