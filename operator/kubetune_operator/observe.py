"""Pure functions that read a Job and its pods and say what state a FineTuneJob is in.

Only the operator writes phase and conditions; this module decides them, so the handlers
stay thin and every reason (unschedulable, image pull, out of memory, exit code) is unit
testable without a cluster.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from kubetune_api import Phase
from kubetune_api.errors import Reason
from kubetune_operator import conditions, kueue, pod_reports
# Waiting reasons that mean the pod cannot start until someone fixes something.
STUCK_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "CrashLoopBackOff"}
# Reasons worth a Warning event although the job is not over.
WARNING_REASONS = STUCK_WAITING | {Reason.Unschedulable.value, Reason.Retrying.value}


@dataclass
class Observation:
    phase: Phase
    reason: str
    message: str
    start_time: Optional[str] = None
    completion_time: Optional[str] = None
    # The trainer's final report from its termination message, when it wrote one.
    report: dict[str, Any] = field(default_factory=dict)
    # The pod whose failure ended the attempt (the operator classifies it: retry or not).
    failed_pod: Optional[dict[str, Any]] = None

    @property
    def condition_status(self) -> str:
        return {Phase.Succeeded: conditions.TRUE, Phase.Failed: conditions.FALSE}.get(self.phase, conditions.UNKNOWN)


def main_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The status of the pod's one container (kubetune pods run a single container)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return statuses[0] if statuses else {}


def parse_termination_message(text: str) -> dict[str, Any]:
    """The trainer writes JSON; with FallbackToLogsOnError it may be plain log lines instead."""
    text = (text or "").strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
    return {"log": text} if text else {}


def _last_line(text: str, limit: int = 300) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][-limit:] if lines else ""


def describe_failure(pod: dict[str, Any]) -> Optional[tuple[str, str, dict[str, Any]]]:
    """(reason, message, report) for a pod whose container terminated with an error."""
    terminated = (main_status(pod).get("state") or {}).get("terminated") or {}
    if not terminated or terminated.get("exitCode", 0) == 0:
        return None
    code = terminated.get("exitCode")
    report = parse_termination_message(terminated.get("message", ""))
    if terminated.get("reason") == "OOMKilled":
        return Reason.OOMKilled.value, "the pod ran out of memory (OOMKilled); use smaller batches or shorter sequences, or raise resources.memory", report
    detail = report.get("error") or _last_line(report.get("log", ""))
    container = main_status(pod).get("name", "container")
    message = f"the {container} exited with code {code}" + (f": {detail}" if detail else "")
    # The pod names the kind of error (InvalidDataset, UnknownMetric, ...); else TrainerFailed/EvaluatorFailed.
    return pod_reports.failure_reason(report.get("reason"), f"{container.capitalize()}Failed"), message, report


def trainer_image(pods: list[dict[str, Any]]) -> Optional[str]:
    """The image the latest pod's container runs: its imageID (a digest), else its image name."""
    latest = _latest_pod(pods)
    status = main_status(latest) if latest is not None else {}
    return status.get("imageID") or status.get("image") or None


def job_finished(job: dict[str, Any]) -> bool:
    """Whether the Job controller has given its verdict (Complete or Failed)."""
    return any(conditions.is_true(job, ctype) for ctype in ("Complete", "Failed"))


def _finished_at(pod: dict[str, Any]) -> Optional[str]:
    return ((main_status(pod).get("state") or {}).get("terminated") or {}).get("finishedAt")


def _latest_pod(pods: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if not pods:
        return None
    return max(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "")


def _pending_reason(pod: dict[str, Any]) -> tuple[str, str]:
    scheduled = conditions.find(pod, "PodScheduled")
    if scheduled.get("status") == conditions.FALSE:
        return scheduled.get("reason") or Reason.Unschedulable.value, scheduled.get("message") or "the pod cannot be scheduled"
    waiting = (main_status(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason") in STUCK_WAITING:
        return waiting["reason"], waiting.get("message") or waiting["reason"]
    return Reason.PodPending.value, "the trainer pod is starting"


def _suite_tasks(scores: dict[str, float]) -> dict[str, str]:
    """A suite's tasks, each with its first score key ('<task>/<metric>'); empty for one task."""
    tasks: dict[str, str] = {}
    for key in scores:
        if "/" in key:
            tasks.setdefault(key.split("/", 1)[0], key)
    return tasks


def _headline_scores(scores: dict[str, float]) -> str:
    """The first four scores; in a suite, the first score of each of the first four tasks and the mean."""
    tasks = _suite_tasks(scores)
    keys = list(tasks.values())[:4] + [k for k in ("mean",) if k in scores] if tasks else list(scores)[:4]
    return ", ".join(f"{k} {scores[k]:.4f}" for k in keys)


def success_message(report: dict[str, Any]) -> str:
    """One line from the pod's final report: training loss and model, or evaluation scores
    (a suite's: the number of tasks, then each model's first score per task and mean)."""
    if "results" in report:
        results = report.get("results") or []
        tasks = len(_suite_tasks((results[0].get("scores") or {}) if results else {}))
        scores = "; ".join(f"{r['model']}: {_headline_scores(r.get('scores') or {})}" for r in results)
        return "evaluation finished" + (f"; {tasks} tasks" if tasks else "") + (f"; {scores}" if scores else "")
    parts = ["training finished"]
    loss = (report.get("metrics") or {}).get("trainLoss")
    if loss is not None:
        parts.append(f"final train loss {loss:.4f}")
    model_path = (report.get("artifacts") or {}).get("modelPath")
    if model_path:
        parts.append(f"model written to {model_path}")
    return "; ".join(parts)


def observe(job: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> Observation:
    """Where a kubetune job stands, judged from its batch/v1 Job and the Job's pods."""
    if job is None:
        return Observation(Phase.Pending, Reason.JobMissing.value, "waiting for the trainer Job to be created")
    job_status = job.get("status") or {}
    start = job_status.get("startTime")
    latest = _latest_pod(pods)

    complete = conditions.find(job, "Complete")
    if complete.get("status") == conditions.TRUE:
        report = {}
        if latest is not None:
            terminated = (main_status(latest).get("state") or {}).get("terminated") or {}
            report = parse_termination_message(terminated.get("message", ""))
        return Observation(Phase.Succeeded, Reason.Completed.value, success_message(report), start,
                           job_status.get("completionTime") or complete.get("lastTransitionTime"), report)

    failed = conditions.find(job, "Failed")
    if failed.get("status") == conditions.TRUE:
        ended = failed.get("lastTransitionTime")
        ordered = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
        failures = [(p, f) for p in ordered if (f := describe_failure(p))]
        if failed.get("reason") == "DeadlineExceeded" or not failures:
            return Observation(Phase.Failed, failed.get("reason") or Reason.JobFailed.value,
                               failed.get("message") or "the trainer Job failed", start, ended,
                               failed_pod=next((p for p in ordered if (p.get("status") or {}).get("phase") == "Failed"), None))
        pod, (reason, message, report) = failures[0]
        return Observation(Phase.Failed, reason, message, start, ended, report, failed_pod=pod)

    if kueue.queued(job):
        return Observation(Phase.Queued, Reason.Queued.value, kueue.message(job), start)
    if latest is None:
        return Observation(Phase.Pending, Reason.JobCreated.value, "waiting for the trainer pod", start)
    pod_phase = (latest.get("status") or {}).get("phase")
    if pod_phase == "Running":
        return Observation(Phase.Running, Reason.Running.value, "running", start or latest["status"].get("startTime"))
    if pod_phase == "Pending":
        reason, message = _pending_reason(latest)
        return Observation(Phase.Pending, reason, message, start)
    # A pod failed but the Job controller has not said so yet: the attempt is over either way
    # (backoffLimit 0); the operator decides whether another attempt follows.
    failure = describe_failure(latest)
    if failure or pod_phase == "Failed":
        reason, message, report = failure or ((latest.get("status") or {}).get("reason") or Reason.PodFailed.value,
                                              (latest.get("status") or {}).get("message") or "the pod failed", {})
        return Observation(Phase.Failed, reason, message, start, _finished_at(latest), report, failed_pod=latest)
    return Observation(Phase.Running, Reason.Running.value, "running", start)


def _tuned_result(evaljob: dict[str, Any]) -> dict[str, Any]:
    results = (evaljob.get("status") or {}).get("results") or []
    return next((r for r in results if r.get("model") == "tuned"), results[-1] if results else {})


def _deltas(delta: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:+.4f}" for k, v in list(delta.items())[:4])


def evaluation_summary(scores_name: str, scores: Optional[dict[str, Any]], retention_name: Optional[str],
                       retention: Optional[dict[str, Any]]) -> tuple[dict[str, Any], tuple[str, str, str]]:
    """A FineTuneJob's status.evaluation and its Evaluated condition (status, reason, message),
    from the EvalJobs its evaluation block created (None where one does not exist yet)."""
    jobs = {scores_name: scores, **({retention_name: retention} if retention_name else {})}
    summary: dict[str, Any] = {"evalJob": scores_name}
    if scores is not None:
        tuned, shown = _tuned_result(scores), scores.get("status") or {}
        summary.update(phase=shown.get("phase"), scores=tuned.get("scores") or {}, delta=tuned.get("delta") or {},
                       deltaLow=tuned.get("deltaLow") or None, deltaHigh=tuned.get("deltaHigh") or None,
                       deltaLevel=tuned.get("deltaLevel"), contaminatedRows=(shown.get("contamination") or {}).get("overlapping"),
                       cachedModels=[r["model"] for r in shown.get("results") or [] if r.get("cached")] or None)
    if retention_name:
        summary["retentionEvalJob"] = retention_name
        if retention is not None:
            summary.update(retentionPhase=(retention.get("status") or {}).get("phase"),
                           forgetting=_tuned_result(retention).get("delta") or {})
    summary = {k: v for k, v in summary.items() if v is not None}
    missing = [name for name, job in jobs.items() if job is None]
    if missing:
        return summary, (conditions.UNKNOWN, Reason.EvaluationPending.value, f"waiting for EvalJob {', '.join(missing)}")
    phases = {name: (job.get("status") or {}).get("phase") for name, job in jobs.items()}
    failed = [name for name, phase in phases.items() if phase == Phase.Failed.value]
    if failed:
        name = failed[0]
        return summary, (conditions.FALSE, Reason.EvaluationFailed.value, f"EvalJob {name} failed: {(jobs[name].get('status') or {}).get('message', '')}")
    if all(phase == Phase.Succeeded.value for phase in phases.values()):
        message = f"tuned vs base: {_deltas(summary.get('delta') or {})}"
        if retention_name:
            message += f"; on retention data: {_deltas(summary.get('forgetting') or {})}"
        if summary.get("cachedModels"):
            message += f"; predictions of {', '.join(summary['cachedModels'])} reused from an earlier evaluation"
        if summary.get("contaminatedRows"):
            message += f"; {summary['contaminatedRows']} evaluation rows overlap the training data (EvalJob status.contamination)"
        return summary, (conditions.TRUE, Reason.Evaluated.value, message)
    return summary, (conditions.UNKNOWN, Reason.Evaluating.value, "evaluating base vs tuned")


# FailedCreate messages that can clear by themselves; any other refusal is final.
_TRANSIENT_CREATE = ("exceeded quota", "timeout", "timed out", "connection refused", "try again",
                     "the server is currently unable", "too many requests")


def creation_refusal(events: list[dict[str, Any]]) -> Optional[tuple[Phase, str, str]]:
    """(phase, reason, message) when the Job controller cannot create the pod (its FailedCreate
    events): Pending while a quota or a transient error may clear, else Failed with the API's message."""
    if not events:
        return None
    latest = max(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    message = latest.get("message") or "the Job cannot create its pod"
    lowered = message.lower()
    if "exceeded quota" in lowered:
        return Phase.Pending, Reason.QuotaExceeded.value, message
    if any(marker in lowered for marker in _TRANSIENT_CREATE):
        return Phase.Pending, Reason.JobCreated.value, f"waiting for the trainer pod: {message}"
    return Phase.Failed, Reason.PodRejected.value, message
