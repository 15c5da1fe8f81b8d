"""What follows a FineTuneJob's training: the EvalJobs of its evaluation block (their scores
mirrored into its status) and the promotion gate and pod of its promotion block."""
from __future__ import annotations

import logging
from typing import Any, Optional

import kopf
from pydantic import ValidationError

import kubetune_api as api
from kubetune_operator import builders, conditions, kube, metrics, observe, preflight, promotion, runtimes, serving, shared, tracking
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
        try:
            if kube.ensure(evaljob):
                kopf.event(ftj, type="Normal", reason="EvaluationCreated", message=f"created EvalJob {evaljob['metadata']['name']}")
        except kube.OwnedByOther:
            pass  # a look-alike holds the name: mirror_evaluation says so and ignores it
    mirror_evaluation(ftj["metadata"]["namespace"], ftj["metadata"]["name"])
    ensure_promotion(ftj["metadata"]["namespace"], ftj["metadata"]["name"])


def _normal(spec: Any) -> Optional[dict[str, Any]]:
    try:
        return api.EvalJobSpec.model_validate(spec).model_dump(by_alias=True, mode="json", exclude={"suspend"})
    except ValidationError:
        return None


def is_ours(evaljob: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether an existing EvalJob is the one the operator creates for this FineTuneJob: owned by
    its uid and with the very spec the evaluation block makes. A name, a label or even an owner
    reference can be written by anyone who may create EvalJobs in the namespace; the spec decides
    what the scores mean."""
    owner = wanted["metadata"]["ownerReferences"][0]["uid"]
    return builders.owned_by(evaljob, owner) and _normal(evaljob.get("spec")) == _normal(wanted["spec"])


def _foreign(ftj: dict[str, Any], names: list[str]) -> tuple[str, str, str]:
    message = (f"EvalJob {', '.join(names)} exists but was not created by this FineTuneJob's evaluation block "
               "(another owner or another spec): it is ignored and the gate cannot pass; delete it and re-create the FineTuneJob")
    if conditions.reason_of(ftj, EVALUATED) != api.Reason.EvaluationFailed.value:
        kopf.event(ftj, type="Warning", reason="ForeignEvalJob", message=message)
    return conditions.FALSE, api.Reason.EvaluationFailed.value, message


@metrics.timed("mirror", kind=FINETUNE.kind)
def mirror_evaluation(namespace: str, name: str) -> None:
    """Copies the headline scores of a FineTuneJob's own EvalJobs into its status.evaluation,
    once its training succeeded. Scores are the EvalJobs' status, which only the operator writes."""
    with shared.lock(FINETUNE.kind, namespace, name):
        ftj = kube.read_object(FINETUNE.plural, namespace, name)
        if (ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("evaluation")
                or (ftj.get("status") or {}).get("phase") != api.Phase.Succeeded.value):
            return
        wanted = builders.evaluation_jobs(ftj["metadata"], api.FineTuneJobSpec.model_validate(ftj["spec"]))
        found = {job["metadata"]["name"]: kube.read_object(EVAL.plural, namespace, job["metadata"]["name"]) for job in wanted}
        foreign = [job["metadata"]["name"] for job in wanted
                   if found[job["metadata"]["name"]] is not None and not is_ours(found[job["metadata"]["name"]], job)]
        scores_name, retention_name = builders.evaluation_job_names(name)
        retention = retention_name if retention_name in found else None
        summary, verdict = observe.evaluation_summary(scores_name, found[scores_name], retention, found.get(retention_name))
        if foreign:
            summary, verdict = {"evalJob": scores_name}, _foreign(ftj, foreign)
        current = ftj.get("status") or {}
        patch = {"evaluation": summary, "conditions": conditions.updated(ftj, (EVALUATED, *verdict))}
        if not shared.changed(current, patch):
            return
        kube.patch_status(FINETUNE.plural, namespace, name, patch)
        if verdict[0] != conditions.status_of(ftj, EVALUATED) and verdict[0] != conditions.UNKNOWN:
            kopf.event(ftj, type="Normal" if verdict[0] == conditions.TRUE else "Warning", reason=verdict[1], message=verdict[2])


def _set_promoted(ftj: dict[str, Any], verdict: promotion.Verdict, summary: dict[str, Any], report: Optional[dict[str, Any]] = None) -> None:
    """Patches status.promotion and the Promoted condition (and, from the promotion pod's
    `report`, status.tracking's version); on a new reason, an event and (for an outcome) the
    promotions counter."""
    meta = ftj["metadata"]
    tracked, changes = tracking.promoted(ftj, report or {})
    patch = {"promotion": summary, "conditions": conditions.updated(ftj, (PROMOTED, *verdict), *changes), **tracked}
    if not shared.changed(ftj.get("status") or {}, patch):
        return
    kube.patch_status(FINETUNE.plural, meta["namespace"], meta["name"], patch)
    if verdict[1] != conditions.reason_of(ftj, PROMOTED):
        log.info(f"FineTuneJob {meta['namespace']}/{meta['name']}: {verdict[1]}: {verdict[2]}")
        kopf.event(ftj, type="Warning" if verdict[0] == "False" else "Normal", reason=verdict[1], message=verdict[2])
        if verdict[1] in promotion.OUTCOMES:
            metrics.observe_promotion(meta["namespace"], promotion.OUTCOMES[verdict[1]])


def _promotable(namespace: str, name: str) -> Optional[dict[str, Any]]:
    """The FineTuneJob while its promotion is still undecided, else None."""
    ftj = kube.read_object(FINETUNE.plural, namespace, name)
    if ftj is None or ftj["metadata"].get("deletionTimestamp") or not ftj["spec"].get("promotion"):
        return None
    return None if conditions.status_of(ftj, PROMOTED) in conditions.DECIDED else ftj


@metrics.timed("promote", kind=FINETUNE.kind)
def ensure_promotion(namespace: str, name: str) -> None:
    """Checks the promotion gate of an evaluated FineTuneJob; when every rule holds, creates
    the promotion pod's ConfigMap, ServiceAccount and Job (idempotent)."""
    with shared.lock(FINETUNE.kind, namespace, name):
        ftj = _promotable(namespace, name)
        if ftj is None or ((ftj.get("status") or {}).get("promotion") or {}).get("jobName"):
            return  # decided, or the promotion Job runs (sync_promotion follows it)
        spec, status = api.FineTuneJobSpec.model_validate(ftj["spec"]), ftj.get("status") or {}
        rules = promotion.gate(spec.promotion, status.get("evaluation") or {})
        summary = {"destination": spec.promotion.destination, "rules": rules}
        evaluated = conditions.status_of(ftj, EVALUATED)
        verdict = promotion.gate_verdict(rules, evaluated)
        if verdict is None and evaluated != conditions.TRUE:
            verdict = (conditions.UNKNOWN, api.Reason.PromotionPending.value, "waiting for the evaluation to finish")
        if verdict is not None:
            _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
            return
        config = builders.promote_config(ftj["metadata"], spec, status, rules)
        try:
            resolved = runtimes.resolve(spec, namespace, shared.config.settings.policy, kube.read_runtime, kube.namespace_labels)
        except preflight.Invalid as invalid:  # the runtime went away or stopped allowing the job since training
            verdict = (conditions.FALSE, api.Reason.PromotionFailed.value, f"{getattr(invalid.reason, 'value', invalid.reason)}: {invalid}: nothing was promoted")
            _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
            return
        try:
            for child in builders.promotion_children(ftj["metadata"], spec, config, shared.config.settings.trainer_image,
                                                     runtime=resolved.spec if resolved else None):
                if kube.ensure(child) and child["kind"] == "Job":
                    kopf.event(ftj, type="Normal", reason="PromotionJobCreated", message=f"created Job {child['metadata']['name']}")
        except kube.OwnedByOther as clash:
            verdict = (conditions.FALSE, api.Reason.PromotionFailed.value, f"{clash}: nothing was promoted")
            _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)})
            return
        verdict = promotion.copy_verdict(api.Phase.Pending, "every rule holds", spec.promotion.destination, rules)
        _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict), "jobName": builders.child_name(name, PROMOTE)})


@metrics.timed("promote", kind=FINETUNE.kind)
def sync_promotion(namespace: str, name: str) -> None:
    """Reads the promotion Job and pod and writes the outcome into the Promoted condition."""
    with shared.lock(FINETUNE.kind, namespace, name):
        ftj = _promotable(namespace, name)
        summary = ((ftj or {}).get("status") or {}).get("promotion") or {}
        if ftj is None or not summary.get("jobName"):
            return
        job = kube.read_job(namespace, summary["jobName"])
        if job is not None and not builders.owned_by(job, ftj["metadata"]["uid"]):
            job = None  # a look-alike decides nothing
        pods = [pod for pod in kube.list_pods(namespace, f"{PROMOTE.label}={name}")
                if job is not None and builders.owned_by(pod, job["metadata"]["uid"])]
        seen = observe.observe(job, pods)
        verdict = promotion.copy_verdict(seen.phase, seen.message, summary.get("destination", ""), summary.get("rules") or [])
        _set_promoted(ftj, verdict, {**summary, "phase": promotion.phase_of(verdict)}, seen.report)
        if verdict[0] == conditions.TRUE and ftj["spec"]["promotion"].get("serve") is not None:
            serving.sync(namespace, name)  # the hand-off to KServe (a timer follows it until Ready)
        if seen.phase == api.Phase.Failed and job is not None and not observe.job_finished(job):
            kube.stop_job(namespace, job["metadata"]["name"])
