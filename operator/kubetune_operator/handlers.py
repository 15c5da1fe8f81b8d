"""kopf handlers: FineTuneJob and EvalJob -> child objects; Job and pod state -> status;
a FineTuneJob's evaluation block -> owned EvalJobs whose scores are mirrored back.

Handlers are thin: validation lives in `preflight`, object shapes in `builders`, state
decisions in `observe`, API calls in `kube`.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Optional

import kopf

import kubetune_api as api
from kubetune_operator import builders, kube, metrics, observe, preflight, promotion
from kubetune_operator.builders import EVAL, FINETUNE, PROMOTE, Workload
from kubetune_operator.settings import OperatorSettings

log = logging.getLogger("kubetune.operator")
FTJ = (api.GROUP, api.VERSION, api.FINETUNEJOB_PLURAL)
EVJ = (api.GROUP, api.VERSION, api.EVALJOB_PLURAL)
FINAL = (api.Phase.Succeeded.value, api.Phase.Failed.value)
SUCCEEDED = api.CONDITION_SUCCEEDED
EVALUATED = api.CONDITION_EVALUATED
PROMOTED = api.CONDITION_PROMOTED
# Fields the pod reports itself; the termination message fills them when its patches failed.
POD_FIELDS = ("progress", "metrics", "artifacts", "results", "suite", "samples")

# Job and pod events for one job arrive on different workers: serialize the
# read-decide-patch cycle per object so an event or a histogram sample is never doubled.
_locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)
# The operator's settings, set once at startup from kopf's memo.
_settings = OperatorSettings()


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger, **_: Any) -> None:
    global _settings
    config: OperatorSettings = memo.config
    _settings = config
    kube.load_config()
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


def _conditions(obj: dict[str, Any], ctype: str, status: str, reason: str, message: str) -> list[dict[str, Any]]:
    return observe.upsert_condition(list((obj.get("status") or {}).get("conditions") or []), ctype, status, reason,
                                    message, obj["metadata"].get("generation"), _now())


def _fail_without_launch(workload: Workload, body: kopf.Body, invalid: preflight.Invalid) -> None:
    reason, message = invalid.reason, str(invalid)
    log.warning(f"{body['metadata']['namespace']}/{body['metadata']['name']}: refused ({reason}): {message}")
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Failed.value, "message": message, "completionTime": _now(),
        "conditions": _conditions(body, SUCCEEDED, "False", reason, message),
        "observedGeneration": body["metadata"].get("generation"),
    })
    kopf.event(body, type="Warning", reason=reason, message=message)
    metrics.observe_final(workload.kind, body["metadata"]["namespace"], api.Phase.Failed.value, reason, None)


def _wait(workload: Workload, body: kopf.Body, waiting: preflight.NotReady) -> None:
    current = next((c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == SUCCEEDED), {})
    if current.get("reason") != waiting.reason:
        kopf.event(body, type="Normal", reason=waiting.reason, message=str(waiting))
    kube.patch_status(workload.plural, body["metadata"]["namespace"], body["metadata"]["name"], {
        "phase": api.Phase.Pending.value, "message": str(waiting),
        "conditions": _conditions(body, SUCCEEDED, "Unknown", waiting.reason, str(waiting)),
        "observedGeneration": body["metadata"].get("generation"),
    })


def _launch(workload: Workload, body: kopf.Body, placement: api.Placement, config: Any) -> None:
    meta = body["metadata"]
    owner = {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]}
    for child in builders.children(owner, workload, placement, config, _settings.trainer_image):
        try:
            created = kube.ensure(child)
        except kube.OwnedByOther as clash:
            raise kopf.TemporaryError(str(clash), delay=15)
        if created and child["kind"] == "Job":
            kopf.event(body, type="Normal", reason="JobCreated", message=f"created Job {child['metadata']['name']}")
    sync(workload, meta["namespace"], meta["name"])


@kopf.on.resume(*FTJ)
@kopf.on.create(*FTJ)
@metrics.timed("launch", kind=FINETUNE.kind)
def launch_finetunejob(body: kopf.Body, status: kopf.Status, **_: Any) -> None:
    """Validates the spec, then creates (or finds) the ConfigMap, RBAC and Job."""
    if status.get("phase") == api.Phase.Succeeded.value:
        ensure_evaluation(dict(body))  # the operator may have stopped between training and evaluation
    if status.get("phase") in FINAL:
        return
    try:
        parsed = preflight.validate(body["metadata"]["name"], dict(body["spec"]))
    except preflight.Invalid as invalid:
        _fail_without_launch(FINETUNE, body, invalid)
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
        _wait(EVAL, body, waiting)
        raise kopf.TemporaryError(str(waiting), delay=_settings.wait_seconds)
    except preflight.Invalid as invalid:
        _fail_without_launch(EVAL, body, invalid)
        return
    _launch(EVAL, body, parsed, config)


@kopf.on.update(*FTJ, field="spec")
@kopf.on.update(*EVJ, field="spec")
def spec_changed(body: kopf.Body, **_: Any) -> None:
    kopf.event(body, type="Warning", reason="SpecImmutable",
               message=f"spec changes after creation are not applied; delete and re-create the {body['kind']} to change it")


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
        _locks.pop((FINETUNE.kind, namespace, name), None)
    else:
        metrics.observe_finetunejob(namespace, name, dict(status))


@kopf.on.event(*EVJ)
def evaljob_event(event: dict[str, Any], namespace: str, name: str, status: kopf.Status, meta: kopf.Meta, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.forget(EVAL.kind, namespace, name)
        _locks.pop((EVAL.kind, namespace, name), None)
        return
    metrics.observe_evaljob(namespace, name, dict(status))
    parent = (meta.get("labels") or {}).get(FINETUNE.label)
    if parent:
        mirror_evaluation(namespace, parent)
        ensure_promotion(namespace, parent)


def _status_patch(workload: Workload, obj: dict[str, Any], seen: observe.Observation,
                  image: Optional[str] = None) -> dict[str, Any]:
    status = obj.get("status") or {}
    patch: dict[str, Any] = {
        "phase": seen.phase.value,
        "conditions": _conditions(obj, SUCCEEDED, seen.condition_status, seen.reason, seen.message),
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


def _changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether the patch says something new (condition timestamps aside)."""
    def essence(status: dict[str, Any]) -> Any:
        conditions = {c.get("type"): {k: c.get(k) for k in ("status", "reason", "message", "observedGeneration")}
                      for c in status.get("conditions") or []}
        return {k: status.get(k) for k in patch if k != "conditions"}, conditions
    return essence(current) != essence({**current, **patch})


@metrics.timed("sync")
def sync(workload: Workload, namespace: str, name: str) -> None:
    """Reads a job's batch/v1 Job and pods and writes what they say into its status."""
    with _locks[(workload.kind, namespace, name)]:
        obj = kube.read_object(workload.plural, namespace, name)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        current = obj.get("status") or {}
        if current.get("phase") in FINAL:
            return  # final: nothing that happens to the children changes the outcome
        job = kube.read_job(namespace, builders.child_name(name, workload))
        pods = kube.list_pods(namespace, f"{workload.label}={name}")
        seen = observe.observe(job, pods)
        patch = _status_patch(workload, obj, seen, observe.trainer_image(pods))
        tokens = (seen.report.get("progress") or current.get("progress") or {}).get("trainTokens")
        patch["usage"] = observe.usage(pods, _now(), tokens, _settings.gpu_hour_price, _settings.currency)
        if not _changed(current, patch):
            return
        kube.patch_status(workload.plural, namespace, name, patch)
        previous = next((c.get("reason") for c in current.get("conditions") or [] if c.get("type") == SUCCEEDED), None)
        if seen.reason != previous:
            log.info(f"{workload.kind} {namespace}/{name}: {seen.phase.value} ({seen.reason}): {seen.message}")
            warning = seen.phase == api.Phase.Failed or seen.reason in observe.WARNING_REASONS
            kopf.event(obj, type="Warning" if warning else "Normal", reason=seen.reason, message=seen.message)
        if seen.phase == api.Phase.Failed and job is not None and not observe.job_finished(job):
            kube.stop_job(namespace, job["metadata"]["name"])  # a user error: no retry can help
        if seen.phase.value in FINAL:
            seconds = ((_parse_time(seen.completion_time) - _parse_time(seen.start_time)).total_seconds()
                       if seen.start_time and seen.completion_time else None)
            metrics.observe_final(workload.kind, namespace, seen.phase.value, seen.reason, seconds, patch["usage"])
    if workload is FINETUNE and seen.phase == api.Phase.Succeeded:
        ensure_evaluation(kube.read_object(workload.plural, namespace, name))


def ensure_evaluation(ftj: Optional[dict[str, Any]]) -> None:
    """Creates the EvalJobs of a succeeded FineTuneJob's evaluation block (idempotent)."""
    if ftj is None or not ftj["spec"].get("evaluation"):
        return
    spec = api.FineTuneJobSpec.model_validate(ftj["spec"])
    for evaljob in builders.evaluation_jobs(ftj["metadata"], spec):
        if kube.ensure(evaljob):
            kopf.event(ftj, type="Normal", reason="EvaluationCreated", message=f"created EvalJob {evaljob['metadata']['name']}")
    mirror_evaluation(ftj["metadata"]["namespace"], ftj["metadata"]["name"])
    ensure_promotion(ftj["metadata"]["namespace"], ftj["metadata"]["name"])


@metrics.timed("mirror", kind=FINETUNE.kind)
def mirror_evaluation(namespace: str, name: str) -> None:
    """Copies the headline scores of a FineTuneJob's EvalJobs into its status.evaluation."""
    with _locks[(FINETUNE.kind, namespace, name)]:
        ftj = kube.read_object(FINETUNE.plural, namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("evaluation"):
            return
        scores_name, retention_name = builders.evaluation_job_names(name)
        scores = kube.read_object(EVAL.plural, namespace, scores_name)
        retention = (kube.read_object(EVAL.plural, namespace, retention_name)
                     if ftj["spec"]["evaluation"].get("retention") else None)
        summary, verdict = observe.evaluation_summary(scores_name, scores, retention_name if retention else None, retention)
        current = ftj.get("status") or {}
        patch = {"evaluation": summary, "conditions": _conditions(ftj, EVALUATED, *verdict)}
        if not _changed(current, patch):
            return
        kube.patch_status(FINETUNE.plural, namespace, name, patch)
        previous = next((c.get("status") for c in current.get("conditions") or [] if c.get("type") == EVALUATED), None)
        if verdict[0] != previous and verdict[0] != "Unknown":
            kopf.event(ftj, type="Normal" if verdict[0] == "True" else "Warning", reason=verdict[1], message=verdict[2])


def _condition_of(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def _set_promoted(ftj: dict[str, Any], verdict: promotion.Verdict, summary: dict[str, Any]) -> None:
    """Patches status.promotion and the Promoted condition; on a new reason, an event and
    (for an outcome) the promotions counter."""
    meta = ftj["metadata"]
    patch = {"promotion": summary, "conditions": _conditions(ftj, PROMOTED, *verdict)}
    if not _changed(ftj.get("status") or {}, patch):
        return
    kube.patch_status(FINETUNE.plural, meta["namespace"], meta["name"], patch)
    if verdict[1] != _condition_of(ftj, PROMOTED).get("reason"):
        log.info(f"FineTuneJob {meta['namespace']}/{meta['name']}: {verdict[1]}: {verdict[2]}")
        kopf.event(ftj, type="Warning" if verdict[0] == "False" else "Normal", reason=verdict[1], message=verdict[2])
        if verdict[1] in promotion.OUTCOMES:
            metrics.observe_promotion(meta["namespace"], promotion.OUTCOMES[verdict[1]])


def _promotable(namespace: str, name: str) -> Optional[dict[str, Any]]:
    """The FineTuneJob while its promotion is still undecided, else None."""
    ftj = kube.read_object(FINETUNE.plural, namespace, name)
    if ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("promotion"):
        return None
    return None if _condition_of(ftj, PROMOTED).get("status") in ("True", "False") else ftj


@metrics.timed("promote", kind=FINETUNE.kind)
def ensure_promotion(namespace: str, name: str) -> None:
    """Checks the promotion gate of an evaluated FineTuneJob; when every rule holds, creates
    the promotion pod's ConfigMap, ServiceAccount and Job (idempotent)."""
    with _locks[(FINETUNE.kind, namespace, name)]:
        ftj = _promotable(namespace, name)
        if ftj is None or ((ftj.get("status") or {}).get("promotion") or {}).get("jobName"):
            return  # decided, or the promotion Job runs (sync_promotion follows it)
        spec, status = api.FineTuneJobSpec.model_validate(ftj["spec"]), ftj.get("status") or {}
        rules = promotion.gate(spec.promotion, status.get("evaluation") or {})
        summary = {"destination": spec.promotion.destination, "rules": rules}
        evaluated = _condition_of(ftj, EVALUATED).get("status")
        verdict = promotion.gate_verdict(rules, evaluated)
        if verdict is None and evaluated != "True":
            verdict = ("Unknown", api.Reason.PromotionPending.value, "waiting for the evaluation to finish")
        if verdict is not None:
            _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
            return
        config = builders.promote_config(ftj["metadata"], spec, status, rules)
        for child in builders.promotion_children(ftj["metadata"], spec, config, _settings.trainer_image):
            if kube.ensure(child) and child["kind"] == "Job":
                kopf.event(ftj, type="Normal", reason="PromotionJobCreated", message=f"created Job {child['metadata']['name']}")
        verdict = promotion.copy_verdict(api.Phase.Pending, "every rule holds", spec.promotion.destination, rules)
        _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict), "jobName": builders.child_name(name, PROMOTE)})


@metrics.timed("promote", kind=FINETUNE.kind)
def sync_promotion(namespace: str, name: str) -> None:
    """Reads the promotion Job and pod and writes the outcome into the Promoted condition."""
    with _locks[(FINETUNE.kind, namespace, name)]:
        ftj = _promotable(namespace, name)
        summary = ((ftj or {}).get("status") or {}).get("promotion") or {}
        if ftj is None or not summary.get("jobName"):
            return
        job = kube.read_job(namespace, summary["jobName"])
        seen = observe.observe(job, kube.list_pods(namespace, f"{PROMOTE.label}={name}"))
        verdict = promotion.copy_verdict(seen.phase, seen.message, summary.get("destination", ""), summary.get("rules") or [])
        _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
        if seen.phase == api.Phase.Failed and job is not None and not observe.job_finished(job):
            kube.stop_job(namespace, job["metadata"]["name"])


@kopf.on.event("batch", "v1", "jobs", labels={PROMOTE.label: kopf.PRESENT}, id="promotion-jobs")
def promotion_job_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    sync_promotion(namespace, meta["labels"][PROMOTE.label])


@kopf.on.event("", "v1", "pods", labels={PROMOTE.label: kopf.PRESENT}, id="promotion-pods")
def promotion_pod_event(meta: kopf.Meta, namespace: str, **_: Any) -> None:
    sync_promotion(namespace, meta["labels"][PROMOTE.label])
