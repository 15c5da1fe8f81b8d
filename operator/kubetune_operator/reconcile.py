"""Reconciliation: a FineTuneJob or EvalJob -> the Job of each attempt; Jobs, pods and what the
pods report -> the job's status.

The operator alone writes a job's status (pods have no API access; the status webhook refuses
everyone else). It decides only from what the API server and the kubelet say (Jobs, pods, their
owners, exit codes) and from its own earlier status; what a pod reports (progress, metrics,
results) is validated and shown, never decided on. Validation lives in `preflight`, object
shapes in `builders`, state decisions in `observe` and `attempts`, the pod ledger in `ledger`,
API calls in `kube`; kopf registrations in `handlers`.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any, Optional

import kopf
from kubernetes.client.rest import ApiException

import kubetune_api as api
from kubetune_api.reports import merged
from kubetune_operator import (attempts, builders, conditions, followups, gang, kube, kueue, ledger, metrics, multinode,
                               observe, pod_reports, preflight, runtimes, shared, tracking)
from kubetune_operator.builders import EVAL, FINETUNE, Workload

log = logging.getLogger("kubetune.operator")
FINAL = (api.Phase.Succeeded.value, api.Phase.Failed.value)
SUCCEEDED = api.CONDITION_SUCCEEDED
SUSPENDED = api.CONDITION_SUSPENDED
SPECS = {FINETUNE.kind: api.FineTuneJobSpec, EVAL.kind: api.EvalJobSpec}
WORKLOADS = {FINETUNE.kind: FINETUNE, EVAL.kind: EVAL}
# Status fields that show what the pod reports (validated; never the basis of a decision).
POD_FIELDS = ("progress", "metrics", "artifacts", "results", "suite", "samples", "contamination")
# A Job gets its pod within moments; only a Job podless for longer has its events read (why not).
POD_GRACE_SECONDS = 5


def fail_without_launch(workload: Workload, body: dict[str, Any], reason: str, message: str) -> None:
    log.warning(f"{body['metadata']['namespace']}/{body['metadata']['name']}: refused ({reason}): {message}")
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Failed.value, "message": message, "completionTime": shared.now(),
        "conditions": conditions.updated(body, (SUCCEEDED, conditions.FALSE, reason, message)),
        "observedGeneration": body["metadata"].get("generation"),
    })
    kopf.event(body, type="Warning", reason=reason, message=message)
    metrics.observe_final(workload.kind, body["metadata"]["namespace"], api.Phase.Failed.value, reason, None)


def wait(workload: Workload, body: dict[str, Any], reason: str, message: str) -> None:
    if conditions.reason_of(body, SUCCEEDED) != reason:
        kopf.event(body, type="Normal" if reason != api.Reason.Forbidden.value else "Warning", reason=reason, message=message)
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Pending.value, "message": message,
        "conditions": conditions.updated(body, (SUCCEEDED, conditions.UNKNOWN, reason, message)),
        "observedGeneration": body["metadata"].get("generation"),
    })


class Refused(Exception):
    """The API server refused a child object: `final` when waiting cannot help."""

    def __init__(self, reason: str, message: str, final: bool):
        super().__init__(message)
        self.reason, self.final = reason, final


def create(child: dict[str, Any]) -> bool:
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


def spec_changed(obj: dict[str, Any]) -> Optional[str]:
    """Why the job may not start another attempt: its spec no longer is the one it launched with
    (changed while no webhook answered). None when it still is (or no digest was recorded)."""
    recorded = (obj.get("status") or {}).get("specDigest")
    if recorded is None or recorded == preflight.spec_digest(obj["spec"]):
        return None
    return ("the spec changed after the job was admitted and launched; no further attempt runs a spec that was "
            "not admitted: delete and re-create the job to run the new spec")


def resolve_runtime(workload: Workload, obj: dict[str, Any], placement: Optional[api.Placement] = None) -> Optional[runtimes.Resolved]:
    """The job's runtime as it is now, checked with the policy as it is now (raises
    preflight.Invalid): every attempt reads both anew, as the webhook did at apply."""
    return runtimes.resolve(placement or _spec_of(workload, obj), obj["metadata"]["namespace"], shared.config.settings.policy,
                            kube.read_runtime, kube.namespace_labels, eval_job=workload is EVAL)


def launch_refusal(workload: Workload, obj: dict[str, Any]) -> Optional[preflight.Invalid]:
    """Why the next attempt may not launch under the runtime and policy of now; None if it may."""
    try:
        resolve_runtime(workload, obj)
    except preflight.Invalid as invalid:
        return invalid
    return None


def start_attempt(workload: Workload, obj: dict[str, Any], attempt: int, placement: Optional[api.Placement] = None,
                  resolved: Optional[runtimes.Resolved] = None) -> Optional[dict[str, Any]]:
    """Creates (or finds) the Job of an attempt; returns the record of the runtime it used."""
    placement = placement or _spec_of(workload, obj)
    resolved = resolved or resolve_runtime(workload, obj, placement)
    settings = shared.config.settings
    child = builders.job(obj["metadata"], workload, placement, settings.trainer_image, attempt=attempt,
                         job_suspend_supported=shared.config.job_suspend, evaluate_metrics=settings.allowed_evaluate_metrics,
                         runtime=resolved.spec if resolved else None)
    nodes, scheduler = (placement.resources.nodes if workload is FINETUNE else 1), (resolved.spec.scheduler_name if resolved else None)
    if why := gang.unavailable(nodes, scheduler, shared.config.indexed_jobs, lambda: kube.api_served(*gang.POD_GROUP_API)):
        raise Refused(api.Reason.GangSchedulingUnavailable.value, why, final=True)
    record, before = (resolved.record() if resolved else None), (obj.get("status") or {}).get("runtime")
    if record and before and before.get("digest") != record["digest"]:
        kopf.event(obj, type="Warning", reason="RuntimeChanged", message=f"attempt {attempt} runs with {record['kind']} "
                   f"{record['name']} as it is now (generation {record['generation']}), changed since the last attempt")
    for part in gang.attempt_objects(obj["metadata"], child, nodes, shared.config.indexed_jobs, scheduler, gang.timeout_seconds(obj["spec"])):
        if create(part) and part["kind"] == "Job":  # multi-node: the Service and PodGroup first (gang.py)
            kopf.event(obj, type="Normal", reason="JobCreated", message=f"created Job {part['metadata']['name']} (attempt {attempt})")
    return record


def launch(workload: Workload, body: dict[str, Any], placement: api.Placement, config: Any) -> None:
    """Creates (or finds) the pod's ConfigMap and the attempt's Job; records the spec's digest."""
    meta, status = body["metadata"], body.get("status") or {}
    owner = {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}
    try:  # the webhook checked runtime and policy at apply; both may have changed since
        resolved = resolve_runtime(workload, body, placement)
    except preflight.Invalid as invalid:
        if status.get("specDigest"):  # launched before (an operator restart): what runs goes on; the next attempt checks again
            log.warning(f"{meta['namespace']}/{meta['name']}: {invalid.reason}: {invalid} (the running attempt goes on)")
            sync(workload, meta["namespace"], meta["name"])
            return
        fail_without_launch(workload, body, invalid.reason, str(invalid))
        return
    record = {"runtime": resolved.record()} if resolved else {}
    if not status.get("specDigest"):
        kube.patch_status(workload.plural, meta["namespace"], meta["name"], {"specDigest": preflight.spec_digest(body["spec"]), **record})
    try:
        for child in builders.children(owner, workload, placement, config, shared.config.settings.trainer_image,
                                       runtime=resolved.spec if resolved else None)[:-1]:
            create(child)
        # A suspended job gets its Job when it resumes (a new attempt); sync records the suspension.
        if not placement.suspend and status.get("phase") != api.Phase.Suspended.value:
            start_attempt(workload, body, status.get("attempt") or 1, placement, resolved)
    except Refused as refused:
        if refused.final:
            fail_without_launch(workload, body, refused.reason, str(refused))
            return
        wait(workload, body, refused.reason, str(refused))
        raise kopf.TemporaryError(str(refused), delay=30)
    sync(workload, meta["namespace"], meta["name"])


def _status_patch(workload: Workload, obj: dict[str, Any], seen: observe.Observation, report: dict[str, Any],
                  image: Optional[str]) -> dict[str, Any]:
    tracked, changes = tracking.mirror(obj, report)  # status.tracking and the Tracked condition
    patch: dict[str, Any] = {
        "phase": seen.phase.value,
        "conditions": conditions.updated(obj, (SUCCEEDED, seen.condition_status, seen.reason, seen.message), *changes),
        "message": seen.message,
        "observedGeneration": obj["metadata"].get("generation"),
        "jobName": builders.child_name(obj["metadata"]["name"], workload),
    }
    patch.update({key: value for key, value in (("startTime", seen.start_time), ("completionTime", seen.completion_time)) if value})
    status = obj.get("status") or {}
    shown = {**{key: report[key] for key in POD_FIELDS if report.get(key)}, **tracked,
             "lineage": {**(report.get("lineage") or {}), **({"image": image} if image else {})}}
    # A merge patch: only what it would change (what was shown earlier stays).
    patch.update({key: value for key, value in shown.items() if value and merged(status.get(key), value) != status.get(key)})
    return patch


def _older_than(obj: Optional[dict[str, Any]], seconds: float) -> bool:
    created = ((obj or {}).get("metadata") or {}).get("creationTimestamp")
    return bool(created) and (shared.parse_time(shared.now()) - shared.parse_time(created)).total_seconds() >= seconds


def _judge(workload: Workload, obj: dict[str, Any], attempt: int, job: Optional[dict[str, Any]], pods: list[dict[str, Any]],
           records: list[dict[str, Any]]) -> tuple[observe.Observation, Optional[attempts.Verdict]]:
    """The attempt's state; for a failed attempt, the verdict (fail the job, or retry)."""
    seen = multinode.observe_attempt(job, pods)  # observe.observe, over every pod of a multi-node attempt
    late = gang.ranks_not_started(_spec_of(workload, obj).resources.nodes, attempt, pods, records, shared.now(),
                                  gang.timeout_seconds(obj["spec"])) if seen.phase in (api.Phase.Pending, api.Phase.Running) else None
    if late is not None:  # not every rank started in time: the attempt lets go of what it holds
        seen = replace(seen, phase=api.Phase.Failed, reason=late["reason"], message=late["message"], failed_pod=None)
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
    failure = late or (attempts.classify(pod, observe.describe_failure(pod)) if pod is not None else None) or attempts.job_failure(job)
    if failure is None:
        failure = {"class": attempts.USER, "reason": seen.reason, "message": seen.message}
    status = obj.get("status") or {}
    if _spec_of(workload, obj).resources.nodes > 1:
        failure = attempts.peer_lost(failure, status.get("pods") or [], attempt)
    checkpoint = (status.get("progress") or {}).get("checkpointStep")
    if failure["class"] == attempts.INFRASTRUCTURE and checkpoint is not None:
        failure["message"] += f"; the latest checkpoint is at step {checkpoint}"
    verdict = attempts.decide(failure, attempt, status.get("retries") or 0, _spec_of(workload, obj).backoff_limit)
    if verdict.retry and (why := spec_changed(obj)):
        verdict = attempts.Verdict(api.Phase.Failed, api.Reason.SpecChanged.value, f"{verdict.message.split(';')[0]}; {why}",
                                   failure=verdict.failure)
    elif verdict.retry and (refusal := launch_refusal(workload, obj)):
        verdict = attempts.Verdict(api.Phase.Failed, getattr(refusal.reason, "value", refusal.reason),
                                   f"{verdict.message.split(';')[0]}; not retried: {refusal}", failure=verdict.failure)
    seen = replace(seen, phase=verdict.phase, reason=verdict.reason, message=verdict.message,
                   completion_time=(seen.completion_time or shared.now()) if verdict.phase == api.Phase.Failed else None)
    return seen, verdict


def owned_children(workload: Workload, obj: dict[str, Any]) -> tuple[set[str], list[dict[str, Any]]]:
    """The uids of the job's own Jobs and the pods those Jobs made. Labels pick candidates;
    owner uids decide (anyone who may create pods in the namespace can copy a label)."""
    meta = obj["metadata"]
    selector = f"{workload.label}={meta['name']}"
    jobs = {job["metadata"]["uid"] for job in kube.list_jobs(meta["namespace"], selector) if builders.owned_by(job, meta["uid"])}
    pods = [pod for pod in kube.list_pods(meta["namespace"], selector)
            if any(ref.get("uid") in jobs for ref in pod["metadata"].get("ownerReferences") or [])]
    return jobs, pods


def _main_pod(pods: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The attempt's pod that reports: the only one, or rank 0 of a multi-node attempt."""
    main = [pod for pod in pods if not multinode.is_worker(pod)]
    return max(main, key=lambda p: p["metadata"].get("creationTimestamp") or "", default=None)


def read_report(workload: Workload, pod: Optional[dict[str, Any]], termination: dict[str, Any]) -> dict[str, Any]:
    """What the attempt's main pod reported: its log's latest report line, else (the log gone)
    its termination message; validated, bounded."""
    model = pod_reports.model_for(workload.kind)
    final = pod_reports.validated(termination, model)
    if pod is None or ledger.record(pod, shared.now()) is None:  # its container never started
        return final
    meta = pod["metadata"]
    logged = pod_reports.from_log(kube.read_pod_log, meta["namespace"], meta["name"], workload.container, model)
    return {**final, **(logged or {})}


@metrics.timed("sync")
def sync(workload: Workload, namespace: str, name: str) -> None:
    """Reads a job's attempts (Jobs and pods) and what its pod reports, and writes the status;
    starts the next attempt after an infrastructure failure; suspends and resumes."""
    with shared.lock(workload.kind, namespace, name):
        obj = kube.read_object(workload.plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        current = obj.get("status") or {}
        if current.get("phase") in FINAL:
            return  # final: nothing that happens to the children changes the outcome
        attempt = current.get("attempt") or 1
        job_name = attempts.job_name(builders.child_name(name, workload), attempt)
        # The Job first: pods listed after a Failed Job show why it failed (not "pod gone", a retry).
        job = kube.read_job(namespace, job_name)
        if job is not None and not builders.owned_by(job, obj["metadata"]["uid"]):
            job = None  # a look-alike: the attempt's own Job is missing
        _, pods = owned_children(workload, obj)
        records = ledger.update(current.get("pods") or [], pods, shared.now())
        if obj["spec"].get("suspend") or current.get("phase") == api.Phase.Suspended.value:
            suspend_or_resume(workload, obj, records)
            return
        attempt_pods = [p for p in pods if attempts.attempt_of(p) == attempt]
        seen, verdict = _judge(workload, obj, attempt, job, attempt_pods, records)
        nodes = (obj["spec"].get("resources") or {}).get("nodes") or 1
        if verdict is None and nodes > 1:
            _start_workers(obj, nodes, job, pods)
        main = _main_pod(attempt_pods)
        report = read_report(workload, main, seen.report)
        if main is not None and workload is FINETUNE:
            records = ledger.count_tokens(records, main["metadata"]["name"], report.get("progress") or {})
        patch = _status_patch(workload, obj, seen, report, observe.trainer_image(pods))
        settings = shared.config.settings
        patch.update(pods=records, usage=ledger.usage(records, settings.gpu_hour_price, settings.currency),
                     attempt=attempt, jobName=job_name)
        if verdict is not None:
            patch["lastFailure"] = verdict.failure
        if verdict is not None and verdict.retry:
            record = start_attempt(workload, obj, attempt + 1)  # before the status says so: a crash here finds it next time
            if record:
                patch["runtime"] = record
            patch.update(attempt=attempt + 1, retries=(current.get("retries") or 0) + 1,
                         jobName=attempts.job_name(builders.child_name(name, workload), attempt + 1))
        if not shared.changed(current, patch):
            return
        kube.patch_status(workload.plural, namespace, name, patch)
        _announce(workload, obj, seen, verdict)
        if seen.phase == api.Phase.Failed and job is not None and not observe.job_finished(job):
            kube.stop_job(namespace, job["metadata"]["name"])  # nothing more to run in this attempt
        if verdict is not None and nodes > 1:  # the other ranks too; deleted where they did not all start
            released = verdict.failure and verdict.failure["reason"] == api.Reason.RanksNotScheduled.value
            (gang.release if released else gang.stop)(namespace, multinode.attempt_job_names(job_name, nodes))
        if seen.phase.value in FINAL:
            seconds = ((shared.parse_time(seen.completion_time) - shared.parse_time(seen.start_time)).total_seconds()
                       if seen.start_time and seen.completion_time else None)
            metrics.observe_final(workload.kind, namespace, seen.phase.value, seen.reason, seconds, patch["usage"])
    if workload is FINETUNE and seen.phase == api.Phase.Succeeded:
        followups.ensure_evaluation(kube.read_object(workload.plural, namespace, name))


def suspend_or_resume(workload: Workload, obj: dict[str, Any], records: list[dict[str, Any]]) -> None:
    """spec.suspend true: deletes the running attempt's Job (its pods stop) and records phase
    Suspended. Back to false: starts the next attempt, which resumes from the latest checkpoint.
    The ledger keeps the stopped pods' time, so usage adds up over every run."""
    meta, status, settings = obj["metadata"], obj.get("status") or {}, shared.config.settings
    namespace, name = meta["namespace"], meta["name"]
    attempt = status.get("attempt") or 1
    base = builders.child_name(name, workload)
    patch: dict[str, Any] = {"pods": records, "usage": ledger.usage(records, settings.gpu_hour_price, settings.currency),
                             "observedGeneration": meta.get("generation")}
    refusal = None if obj["spec"].get("suspend") or spec_changed(obj) else launch_refusal(workload, obj)
    if not obj["spec"].get("suspend") and (why := spec_changed(obj) or (str(refusal) if refusal else None)):
        reason = api.Reason.SpecChanged.value if refusal is None else getattr(refusal.reason, "value", refusal.reason)
        message = f"not resumed: {why}"
        patch.update(phase=api.Phase.Failed.value, message=message, completionTime=shared.now(),
                     conditions=conditions.updated(obj, (SUSPENDED, conditions.FALSE, reason, message),
                                                   (SUCCEEDED, conditions.FALSE, reason, message)))
    elif obj["spec"].get("suspend"):
        if status.get("jobName"):
            kube.delete_job(namespace, attempts.job_name(base, attempt))
        message = "suspended: the pods are stopped; set spec.suspend to false to resume from the latest checkpoint"
        patch.update(phase=api.Phase.Suspended.value, message=message,
                     conditions=conditions.updated(obj, (SUSPENDED, conditions.TRUE, api.Reason.Suspended.value, message),
                                                   (SUCCEEDED, conditions.UNKNOWN, api.Reason.Suspended.value, message)))
        reason = api.Reason.Suspended.value
    else:
        attempt = attempt + 1 if status.get("jobName") else attempt
        if record := start_attempt(workload, obj, attempt):
            patch["runtime"] = record
        message = f"resumed: attempt {attempt} continues from the latest checkpoint"
        patch.update(phase=api.Phase.Pending.value, message=message, attempt=attempt,
                     jobName=attempts.job_name(base, attempt),
                     conditions=conditions.updated(obj, (SUSPENDED, conditions.FALSE, api.Reason.Resumed.value, message),
                                                   (SUCCEEDED, conditions.UNKNOWN, api.Reason.JobCreated.value, message)))
        reason = api.Reason.Resumed.value
    if not shared.changed(status, patch):
        return
    kube.patch_status(workload.plural, namespace, name, patch)
    if conditions.reason_of(obj, SUSPENDED) != reason:
        log.info(f"{workload.kind} {namespace}/{name}: {message}")
        kopf.event(obj, type="Warning" if patch.get("phase") == api.Phase.Failed.value else "Normal", reason=reason, message=message)
    if patch.get("phase") == api.Phase.Failed.value:
        metrics.observe_final(workload.kind, namespace, api.Phase.Failed.value, reason, None, patch["usage"])


def _start_workers(obj: dict[str, Any], nodes: int, job: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
    """Multi-node: the attempt's worker Jobs, once its rank-0 pod has an IP (see multinode)."""
    for worker in multinode.workers_to_create(nodes, job, pods):
        env = {e["name"]: e.get("value") for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
        what = f"Job {worker['metadata']['name']} (machine rank {multinode.rank_of(worker)} of {nodes}, rank 0 at {env[multinode.ENV_MAIN_ADDRESS]})"
        try:
            if create(worker):
                kopf.event(obj, type="Normal", reason="WorkerCreated", message=f"created {what}")
        except Refused as refused:  # rank 0 waits (its rendezvous times out); the next sync tries again
            kopf.event(obj, type="Warning", reason=refused.reason, message=str(refused))


def _announce(workload: Workload, obj: dict[str, Any], seen: observe.Observation,
              verdict: Optional[attempts.Verdict]) -> None:
    """A log line and an event when the reason changes (every retry is news of its own)."""
    previous = conditions.reason_of(obj, SUCCEEDED)
    if seen.reason == previous and not (verdict and verdict.retry):
        return
    log.info(f"{workload.kind} {obj['metadata']['namespace']}/{obj['metadata']['name']}: "
             f"{seen.phase.value} ({seen.reason}): {seen.message}")
    warning = seen.phase == api.Phase.Failed or seen.reason in observe.WARNING_REASONS
    kopf.event(obj, type="Warning" if warning else "Normal", reason=seen.reason, message=seen.message)
