"""What follows a FineTuneJob's training: the EvalJobs of its evaluation block (their scores
mirrored into its status) and the promotion gate and pod of its promotion block."""
from __future__ import annotations

import logging
from typing import Any, Optional

import kopf

import kubetune_api as api
from kubetune_operator import builders, kube, metrics, observe, promotion, shared
from kubetune_operator.builders import EVAL, FINETUNE, PROMOTE

log = logging.getLogger("kubetune.operator")
EVALUATED = api.CONDITION_EVALUATED
PROMOTED = api.CONDITION_PROMOTED


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
    with shared.locks[(FINETUNE.kind, namespace, name)]:
        ftj = kube.read_object(FINETUNE.plural, namespace, name)
        if ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("evaluation"):
            return
        scores_name, retention_name = builders.evaluation_job_names(name)
        scores = kube.read_object(EVAL.plural, namespace, scores_name)
        retention = (kube.read_object(EVAL.plural, namespace, retention_name)
                     if ftj["spec"]["evaluation"].get("retention") else None)
        summary, verdict = observe.evaluation_summary(scores_name, scores, retention_name if retention else None, retention)
        current = ftj.get("status") or {}
        patch = {"evaluation": summary, "conditions": shared.conditions(ftj, EVALUATED, *verdict)}
        if not shared.changed(current, patch):
            return
        kube.patch_status(FINETUNE.plural, namespace, name, patch)
        previous = next((c.get("status") for c in current.get("conditions") or [] if c.get("type") == EVALUATED), None)
        if verdict[0] != previous and verdict[0] != "Unknown":
            kopf.event(ftj, type="Normal" if verdict[0] == "True" else "Warning", reason=verdict[1], message=verdict[2])


def _set_promoted(ftj: dict[str, Any], verdict: promotion.Verdict, summary: dict[str, Any]) -> None:
    """Patches status.promotion and the Promoted condition; on a new reason, an event and
    (for an outcome) the promotions counter."""
    meta = ftj["metadata"]
    patch = {"promotion": summary, "conditions": shared.conditions(ftj, PROMOTED, *verdict)}
    if not shared.changed(ftj.get("status") or {}, patch):
        return
    kube.patch_status(FINETUNE.plural, meta["namespace"], meta["name"], patch)
    if verdict[1] != shared.condition_of(ftj, PROMOTED).get("reason"):
        log.info(f"FineTuneJob {meta['namespace']}/{meta['name']}: {verdict[1]}: {verdict[2]}")
        kopf.event(ftj, type="Warning" if verdict[0] == "False" else "Normal", reason=verdict[1], message=verdict[2])
        if verdict[1] in promotion.OUTCOMES:
            metrics.observe_promotion(meta["namespace"], promotion.OUTCOMES[verdict[1]])


def _promotable(namespace: str, name: str) -> Optional[dict[str, Any]]:
    """The FineTuneJob while its promotion is still undecided, else None."""
    ftj = kube.read_object(FINETUNE.plural, namespace, name)
    if ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("promotion"):
        return None
    return None if shared.condition_of(ftj, PROMOTED).get("status") in ("True", "False") else ftj


@metrics.timed("promote", kind=FINETUNE.kind)
def ensure_promotion(namespace: str, name: str) -> None:
    """Checks the promotion gate of an evaluated FineTuneJob; when every rule holds, creates
    the promotion pod's ConfigMap, ServiceAccount and Job (idempotent)."""
    with shared.locks[(FINETUNE.kind, namespace, name)]:
        ftj = _promotable(namespace, name)
        if ftj is None or ((ftj.get("status") or {}).get("promotion") or {}).get("jobName"):
            return  # decided, or the promotion Job runs (sync_promotion follows it)
        spec, status = api.FineTuneJobSpec.model_validate(ftj["spec"]), ftj.get("status") or {}
        rules = promotion.gate(spec.promotion, status.get("evaluation") or {})
        summary = {"destination": spec.promotion.destination, "rules": rules}
        evaluated = shared.condition_of(ftj, EVALUATED).get("status")
        verdict = promotion.gate_verdict(rules, evaluated)
        if verdict is None and evaluated != "True":
            verdict = ("Unknown", api.Reason.PromotionPending.value, "waiting for the evaluation to finish")
        if verdict is not None:
            _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
            return
        config = builders.promote_config(ftj["metadata"], spec, status, rules)
        for child in builders.promotion_children(ftj["metadata"], spec, config, shared.config.settings.trainer_image):
            if kube.ensure(child) and child["kind"] == "Job":
                kopf.event(ftj, type="Normal", reason="PromotionJobCreated", message=f"created Job {child['metadata']['name']}")
        verdict = promotion.copy_verdict(api.Phase.Pending, "every rule holds", spec.promotion.destination, rules)
        _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict), "jobName": builders.child_name(name, PROMOTE)})


@metrics.timed("promote", kind=FINETUNE.kind)
def sync_promotion(namespace: str, name: str) -> None:
    """Reads the promotion Job and pod and writes the outcome into the Promoted condition."""
    with shared.locks[(FINETUNE.kind, namespace, name)]:
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
