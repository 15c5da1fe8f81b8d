"""kopf handlers: FineTuneJob and EvalJob -> the Job of each attempt; Job and pod state -> status.

Handlers are thin: validation lives in `preflight`, object shapes in `builders`, state
decisions in `observe` and `attempts`, the pod ledger in `ledger`, API calls in `kube`.
What follows training (evaluation, promotion) is in `followups`; suspend, TTL and timers
in `operations`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, Optional

import kopf
from kubernetes.client.rest import ApiException

import kubetune_api as api
from kubetune_operator import attempts, builders, followups, kube, kueue, ledger, metrics, multinode, observe, preflight, shared
from kubetune_operator.builders import EVAL, FINETUNE, Workload
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
FTJ = (api.GROUP, api.VERSION, api.FINETUNEJOB_PLURAL)
EVJ = (api.GROUP, api.VERSION, api.EVALJOB_PLURAL)
FINAL = (api.Phase.Succeeded.value, api.Phase.Failed.value)
SUCCEEDED = api.CONDITION_SUCCEEDED
SUSPENDED = api.CONDITION_SUSPENDED
SPECS = {FINETUNE.kind: api.FineTuneJobSpec, EVAL.kind: api.EvalJobSpec}
# Fields the pod reports itself; the termination message fills them when its patches failed.
POD_FIELDS = ("progress", "metrics", "artifacts", "results", "suite", "samples")
# A Job gets its pod within moments; only a Job podless for longer has its events read (why not).
POD_GRACE_SECONDS = 5


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_: Any) -> None:
    config: OperatorSettings = memo.config
    shared.config.settings = config
    kube.load_config()
    shared.config.job_suspend = kueue.job_suspend_supported(kube.server_version())
    metrics.set_currency(config.currency if config.gpu_hour_price is not None else None)
    # Our own prefix for everything kopf stores on objects. No finalizer is needed:
    # children go by garbage collection, so deletion never waits on the operator.
    settings.persistence.finalizer = "kubetune.io/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kubetune.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="kubetune.io", key="last-handled-configuration")
    settings.posting.reporting_component = "kubetune-operator"
    settings.posting.level = logging.WARNING  # our own events say what happened; not kopf's log
    settings.execution.max_workers = config.workers
    settings.watching.server_timeout = 300
    logging.getLogger("kubetune").setLevel(logging.INFO)
    if config.metrics_port:
        metrics.serve(config.metrics_port, config.metrics_address)
        logger.info(f"serving Prometheus metrics on {config.metrics_address}:{config.metrics_port}/metrics")


def _fail_without_launch(workload: Workload, body: kopf.Body, reason: str, message: str) -> None:
    log.warning(f"{body['metadata']['namespace']}/{body['metadata']['name']}: refused ({reason}): {message}")
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Failed.value, "message": message, "completionTime": shared.now(),
        "conditions": shared.conditions(body, SUCCEEDED, "False", reason, message),
        "observedGeneration": body["metadata"].get("generation"),
    })
    kopf.event(body, type="Warning", reason=reason, message=message)
    metrics.observe_final(workload.kind, body["metadata"]["namespace"], api.Phase.Failed.value, reason, None)


def _wait(workload: Workload, body: kopf.Body, reason: str, message: str) -> None:
    if shared.reason_of(body, SUCCEEDED) != reason:
        kopf.event(body, type="Normal" if reason != api.Reason.Forbidden.value else "Warning", reason=reason, message=message)
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Pending.value, "message": message,
        "conditions": shared.conditions(body, SUCCEEDED, "Unknown", reason, message),
        "observedGeneration": body["metadata"].get("generation"),
    })


class Refused(Exception):
    """The API server refused a child object: `final` when waiting cannot help."""

    def __init__(self, reason: str, message: str, final: bool):
        super().__init__(message)
        self.reason, self.final = reason, final


def _create(child: dict[str, Any]) -> bool:
    """kube.ensure, with the API server's refusals turned into a reason and its message."""
    try:
        return kube.ensure(child)
    except kube.OwnedByOther as clash:
        raise kopf.TemporaryError(str(clash), delay=15)
    except ApiException as exc:
        try:
            detail = json.loads(exc.body or "{}").get("message") or exc.reason
        except ValueError:
            detail = exc.body or exc.reason
        what = f"creating {child['kind']} {child['metadata']['name']} was refused: {detail}"
        if exc.status in (400, 422):
            raise Refused(api.Reason.JobRejected.value, what, final=True)
        if exc.status == 403:
            quota = "exceeded quota" in str(detail)
            raise Refused((api.Reason.QuotaExceeded if quota else api.Reason.Forbidden).value, what, final=False)
        raise


def _spec_of(workload: Workload, obj: dict[str, Any]) -> api.Placement:
    return SPECS[workload.kind].model_validate(obj["spec"])


def start_attempt(workload: Workload, obj: dict[str, Any], attempt: int, placement: Optional[api.Placement] = None) -> None:
    """Creates (or finds) the Job of an attempt."""
    placement = placement or _spec_of(workload, obj)
    child = builders.job(obj["metadata"], workload, placement, shared.config.settings.trainer_image, attempt=attempt,
                         job_suspend_supported=shared.config.job_suspend)
    if _create(child):
        kopf.event(obj, type="Normal", reason="JobCreated", message=f"created Job {child['metadata']['name']} (attempt {attempt})")


def _launch(workload: Workload, body: kopf.Body, placement: api.Placement, config: Any) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    owner = {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}
    try:
        for child in builders.children(owner, workload, placement, config, shared.config.settings.trainer_image)[:-1]:
            _create(child)
        # A suspended job gets its Job when it resumes (a new attempt); sync records the suspension.
        if not placement.suspend and status.get("phase") != api.Phase.Suspended.value:
            start_attempt(workload, dict(body), status.get("attempt") or 1, placement)
    except Refused as refused:
        if refused.final:
            _fail_without_launch(workload, body, refused.reason, str(refused))
            return
        _wait(workload, body, refused.reason, str(refused))
        raise kopf.TemporaryError(str(refused), delay=30)
    sync(workload, meta["namespace"], meta["name"])


@kopf.on.resume(*FTJ)
@kopf.on.create(*FTJ)
@metrics.timed("launch", kind=FINETUNE.kind)
def launch_finetunejob(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    """Validates the spec, then creates (or finds) the ConfigMap, RBAC and the attempt's Job."""
    if status.get("phase") == api.Phase.Succeeded.value:
        followups.ensure_evaluation(dict(body))  # the operator may have stopped between training and evaluation
    if status.get("phase") in FINAL:
        return
    try:
        parsed = preflight.validate(body["metadata"]["name"], dict(body["spec"]))
    except preflight.Invalid as invalid:
        _fail_without_launch(FINETUNE, body, invalid.reason, str(invalid))
        return
    _launch(FINETUNE, body, parsed, parsed.training_config())


@kopf.on.resume(*EVJ)
@kopf.on.create(*EVJ)
@metrics.timed("launch", kind=EVAL.kind)
def launch_evaljob(body: kopf.Body, status: kopf.Status, namespace: str, **_: Any) -> None:
    """Resolves FineTuneJob references (waiting for them to succeed), validates, launches."""
    if status.get("phase") in FINAL:
        return
    try:
        parsed, config = preflight.validate_eval(
            body["metadata"]["name"], dict(body["spec"]),
            lookup=lambda name: kube.read_object(api.FINETUNEJOB_PLURAL, namespace, name))
    except preflight.NotReady as waiting:
        _wait(EVAL, body, waiting.reason, str(waiting))
        raise kopf.TemporaryError(str(waiting), delay=shared.config.settings.wait_seconds)
    except preflight.Invalid as invalid:
        _fail_without_launch(EVAL, body, invalid.reason, str(invalid))
        return
    _launch(EVAL, body, parsed, config)


def _watch_children(workload: Workload) -> None:
    owned = {workload.label: kopf.PRESENT}

    @kopf.on.event("batch", "v1", "jobs", labels=owned, id=f"{workload.plural}-jobs")
    def job_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
        sync(workload, namespace, meta["labels"][workload.label])

    @kopf.on.event("", "v1", "pods", labels=owned, id=f"{workload.plural}-pods")
    def pod_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
        sync(workload, namespace, meta["labels"][workload.label])


for _workload in (FINETUNE, EVAL):
    _watch_children(_workload)


@kopf.on.event(*FTJ)
def finetunejob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget(FINETUNE.kind, namespace, name)
        shared.locks.pop((FINETUNE.kind, namespace, name), None)
    else:
        metrics.observe_finetunejob(namespace, name, dict(status))


@kopf.on.event(*EVJ)
def evaljob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, meta: kopf.Meta, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget(EVAL.kind, namespace, name)
        shared.locks.pop((EVAL.kind, namespace, name), None)
        return
    metrics.observe_evaljob(namespace, name, dict(status))
    parent = (meta.get("labels") or {}).get(FINETUNE.label)
    if parent:
        followups.mirror_evaluation(namespace, parent)
        followups.ensure_promotion(namespace, parent)


def _status_patch(workload: Workload, obj: dict[str, Any], seen: observe.Observation,
                  image: Optional[str] = None) -> dict[str, Any]:
    status = obj.get("status") or {}
    patch: dict[str, Any] = {
        "phase": seen.phase.value,
        "conditions": shared.conditions(obj, SUCCEEDED, seen.condition_status, seen.reason, seen.message),
        "message": seen.message,
        "observedGeneration": obj["metadata"].get("generation"),
        "jobName": builders.child_name(obj["metadata"]["name"], workload),
    }
    if seen.start_time:
        patch["startTime"] = seen.start_time
    if seen.completion_time:
        patch["completionTime"] = seen.completion_time
    for key in POD_FIELDS:
        if seen.report.get(key) and not status.get(key):
            patch[key] = seen.report[key]
    patch.update(observe.image_patch(status, image))  # status.lineage.image; the pod owns the rest
    return patch


def _older_than(obj: Optional[dict[str, Any]], seconds: float) -> bool:
    created = ((obj or {}).get("metadata") or {}).get("creationTimestamp")
    return bool(created) and (shared.parse_time(shared.now()) - shared.parse_time(created)).total_seconds() >= seconds


def _judge(workload: Workload, obj: dict[str, Any], attempt: int, job: Optional[dict[str, Any]],
           pods: list[dict[str, Any]]) -> tuple[observe.Observation, Optional[attempts.Verdict]]:
    """The attempt's state; for a failed attempt, the verdict (fail the job, or retry)."""
    seen = multinode.observe_attempt(job, pods)  # observe.observe, over every pod of a multi-node attempt
    if seen.phase == api.Phase.Pending and seen.reason == api.Reason.JobCreated.value and _older_than(job, POD_GRACE_SECONDS):
        try:
            refusal = observe.creation_refusal(kube.failed_create_events(job))
        except ApiException as exc:  # e.g. RBAC without events/list: the job still waits, visibly
            log.warning(f"cannot read the events of Job {job['metadata']['name']}: {exc.status} {exc.reason}")
            refusal = None
        if refusal is not None:
            phase, reason, message = refusal
            return replace(seen, phase=phase, reason=reason, message=message,
                           completion_time=shared.now() if phase == api.Phase.Failed else None), None
    if seen.phase == api.Phase.Queued and job is not None:
        return replace(seen, message=kueue.message(job, kube.kueue_workload(job))), None
    if seen.phase != api.Phase.Failed:
        if seen.phase == api.Phase.Running and attempt > 1:
            seen = replace(seen, message=f"{seen.message} (attempt {attempt})")
        return seen, None
    pod = seen.failed_pod
    failure = (attempts.classify(pod, observe.describe_failure(pod)) if pod is not None else None) or attempts.job_failure(job)
    if failure is None:
        failure = {"class": attempts.USER, "reason": seen.reason, "message": seen.message}
    status = obj.get("status") or {}
    if _spec_of(workload, obj).resources.nodes > 1:
        failure = attempts.peer_lost(failure, status.get("pods") or [], attempt)
    checkpoint = (status.get("progress") or {}).get("checkpointStep")
    if failure["class"] == attempts.INFRASTRUCTURE and checkpoint is not None:
        failure["message"] += f"; the latest checkpoint is at step {checkpoint}"
    verdict = attempts.decide(failure, attempt, status.get("retries") or 0, _spec_of(workload, obj).backoff_limit)
    seen = replace(seen, phase=verdict.phase, reason=verdict.reason, message=verdict.message,
                   completion_time=(seen.completion_time or shared.now()) if verdict.phase == api.Phase.Failed else None)
    return seen, verdict


@metrics.timed("sync")
def sync(workload: Workload, namespace: str, name: str) -> None:
    """Reads a job's attempts (Jobs and pods) and writes what they say into its status; starts
    the next attempt after an infrastructure failure; suspends and resumes."""
    with shared.locks[(workload.kind, namespace, name)]:
        obj = kube.read_object(workload.plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        current = obj.get("status") or {}
        if current.get("phase") in FINAL:
            return  # final: nothing that happens to the children changes the outcome
        pods = kube.list_pods(namespace, f"{workload.label}={name}")
        records = ledger.update(current.get("pods") or [], pods, shared.now())
        if obj["spec"].get("suspend") or current.get("phase") == api.Phase.Suspended.value:
            operations.suspend_or_resume(workload, obj, records)
            return
        attempt = current.get("attempt") or 1
        job_name = attempts.job_name(builders.child_name(name, workload), attempt)
        job = kube.read_job(namespace, job_name)
        seen, verdict = _judge(workload, obj, attempt, job, [p for p in pods if attempts.attempt_of(p) == attempt])
        nodes = (obj["spec"].get("resources") or {}).get("nodes") or 1
        if verdict is None and nodes > 1:
            _start_workers(obj, nodes, job, pods)
        patch = _status_patch(workload, obj, seen, observe.trainer_image(pods))
        tokens = (seen.report.get("progress") or current.get("progress") or {}).get("trainTokens")
        settings = shared.config.settings
        patch.update(pods=records, usage=ledger.usage(records, tokens, settings.gpu_hour_price, settings.currency),
                     attempt=attempt, jobName=job_name)
        if verdict is not None:
            patch["lastFailure"] = verdict.failure
        if verdict is not None and verdict.retry:
            start_attempt(workload, obj, attempt + 1)  # before the status says so: a crash here finds it next time
            patch.update(attempt=attempt + 1, retries=(current.get("retries") or 0) + 1,
                         jobName=attempts.job_name(builders.child_name(name, workload), attempt + 1))
        if not shared.changed(current, patch):
            return
        kube.patch_status(workload.plural, namespace, name, patch)
        _announce(workload, obj, seen, verdict)
        if seen.phase == api.Phase.Failed and job is not None and not observe.job_finished(job):
            kube.stop_job(namespace, job["metadata"]["name"])  # nothing more to run in this attempt
        if verdict is not None and nodes > 1:
            _stop_attempt(namespace, multinode.attempt_job_names(job_name, nodes))  # the other ranks too
        if seen.phase.value in FINAL:
            seconds = ((shared.parse_time(seen.completion_time) - shared.parse_time(seen.start_time)).total_seconds()
                       if seen.start_time and seen.completion_time else None)
            metrics.observe_final(workload.kind, namespace, seen.phase.value, seen.reason, seconds, patch["usage"])
    if workload is FINETUNE and seen.phase == api.Phase.Succeeded:
        followups.ensure_evaluation(kube.read_object(workload.plural, namespace, name))


def _start_workers(obj: dict[str, Any], nodes: int, job: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
    """Multi-node: the attempt's worker Jobs, once its rank-0 pod has an IP (see multinode)."""
    for worker in multinode.workers_to_create(nodes, job, pods):
        env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        what = f"Job {worker['metadata']['name']} (machine rank {multinode.rank_of(worker)} of {nodes}, rank 0 at {env[multinode.ENV_MAIN_ADDRESS]})"
        try:
            if _create(worker):
                kopf.event(obj, type="Normal", reason="WorkerCreated", message=f"created {what}")
        except Refused as refused:  # rank 0 waits (its rendezvous times out); the next sync tries again
            kopf.event(obj, type="Warning", reason=refused.reason, message=str(refused))


def _stop_attempt(namespace: str, names: list[str]) -> None:
    """Stops every Job of a failed multi-node attempt: the other ranks cannot go on alone."""
    for name in names:
        try:
            kube.stop_job(namespace, name)
        except ApiException as exc:
            if exc.status != 404:  # a worker Job not created yet
                raise


def _announce(workload: Workload, obj: dict[str, Any], seen: observe.Observation,
              verdict: Optional[attempts.Verdict]) -> None:
    """A log line and an event when the reason changes (every retry is news of its own)."""
    previous = shared.reason_of(obj, SUCCEEDED)
    if seen.reason == previous and not (verdict and verdict.retry):
        return
    log.info(f"{workload.kind} {obj['metadata']['namespace']}/{obj['metadata']['name']}: "
             f"{seen.phase.value} ({seen.reason}): {seen.message}")
    warning = seen.phase == api.Phase.Failed or seen.reason in observe.WARNING_REASONS
    kopf.event(obj, type="Warning" if warning else "Normal", reason=seen.reason, message=seen.message)


# Suspend, TTL and the pod-creation timer: handlers of their own, which call sync.
from kubetune_operator import operations  # noqa: E402  (imports this module)
