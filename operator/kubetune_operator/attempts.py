"""Attempts, and which failures earn another one.

Each attempt of a job is one batch/v1 Job with backoffLimit 0, so the Job controller never
starts a second pod on its own. The operator classifies every pod failure and decides:

- infrastructure (evicted, preempted, node lost, killed by a signal without running out of
  memory, a pod that failed before its container ran): the next attempt starts, up to
  spec.backoffLimit, and resumes from the latest checkpoint;
- the user's (a bad config, data or model, OOMKilled, the deadline, an error exit code): the
  job fails at once with the pod's reason; another pod would fail the same way.

This follows the exit-code convention of Kubeflow's training operator (1-127: permanent,
128+: killed by a signal, retryable) and works on any Kubernetes version: no podFailurePolicy.
Attempt names are deterministic, so an operator killed between deciding and recording a retry
finds the Job it created instead of making a second one.
"""
from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any, Optional

from kubetune_api import Phase
from kubetune_api.errors import Reason
from kubetune_operator import conditions, observe

ATTEMPT_LABEL = "kubetune.io/attempt"
INFRASTRUCTURE, USER = "infrastructure", "user"
# Pod-level reasons of a Failed pod that the node or the cluster caused.
INFRA_POD_REASONS = {"Evicted", "NodeLost", "Preempting", "Shutdown", "Terminated", "NodeShutdown",
                      "UnexpectedAdmissionError", "NodeAffinity", "OutOfcpu", "OutOfmemory", "OutOfpods"}


def job_name(base: str, attempt: int) -> str:
    """The Job of an attempt: `<base>` for the first (as before retries existed), `<base>-<n>` after."""
    return base if attempt <= 1 else f"{base}-{attempt}"


def attempt_of(obj: dict[str, Any]) -> int:
    """The attempt a pod or Job belongs to (its label; 1 when it has none)."""
    value = ((obj.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, "1")
    return int(value) if str(value).isdigit() else 1


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def _disruption(pod: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The DisruptionTarget condition (Kubernetes >= 1.26) of a pod the cluster took away."""
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "DisruptionTarget" and cond.get("status") == conditions.TRUE:
            return cond
    return None


def classify(pod: dict[str, Any], described: Optional[tuple[str, str, dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """status.lastFailure for a failed pod (class, reason, message, exitCode), or None.
    `described` is observe.describe_failure(pod): the container's own account, if it exited."""
    status = pod.get("status") or {}
    terminated = (observe.main_status(pod).get("state") or {}).get("terminated") or {}
    code = terminated.get("exitCode")
    disruption = _disruption(pod)
    if disruption is not None:
        return {"class": INFRASTRUCTURE, "reason": Reason.Preempted.value, "exitCode": code,
                "message": f"{disruption.get('reason', 'DisruptionTarget')}: {disruption.get('message', '')}".strip(": ")}
    if status.get("phase") == "Failed" and status.get("reason") in INFRA_POD_REASONS:
        return {"class": INFRASTRUCTURE, "reason": status["reason"], "exitCode": code,
                "message": status.get("message") or f"the pod failed: {status['reason']}"}
    if described is None:
        if status.get("phase") == "Failed":  # it failed before its container ran
            return {"class": INFRASTRUCTURE, "reason": Reason.PodFailed.value, "exitCode": code,
                    "message": status.get("message") or "the pod failed before its container ran"}
        return None
    reason, message, _ = described
    if reason != Reason.OOMKilled.value and code is not None and code > 128:
        return {"class": INFRASTRUCTURE, "reason": Reason.KilledBySignal.value, "exitCode": code,
                "message": f"the container was killed by {_signal_name(code)} (exit code {code}) without running out of memory"}
    return {"class": USER, "reason": reason, "message": message, "exitCode": code}


def job_failure(job: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The failure of an attempt whose Job failed with no failed pod to explain it."""
    for cond in ((job or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Failed" and cond.get("status") == conditions.TRUE:
            if cond.get("reason") == "DeadlineExceeded":
                return {"class": USER, "reason": Reason.DeadlineExceeded.value,
                        "message": cond.get("message") or "the Job ran past activeDeadlineSeconds"}
            return {"class": INFRASTRUCTURE, "reason": Reason.JobFailed.value,
                    "message": cond.get("message") or "the Job failed and its pod is gone"}
    return None


def peer_lost(failure: dict[str, Any], records: list[dict[str, Any]], attempt: int) -> dict[str, Any]:
    """A multi-node attempt whose pod vanished while running (a lost node, a deleted pod) fails
    in the ranks left behind with an ordinary error (a closed connection): the infrastructure's
    doing, not the user's. `records` is the pod ledger (status.pods)."""
    lost = [r["name"] for r in records if r.get("lost") and r.get("attempt", 1) == attempt]
    if failure["class"] != USER or not lost or failure["reason"] in (Reason.OOMKilled.value, Reason.DeadlineExceeded.value):
        return failure
    return {**failure, "class": INFRASTRUCTURE, "reason": Reason.PodLost.value,
            "message": f"pod {', '.join(lost)} of this attempt disappeared while running; then {failure['message']}"}


@dataclass(frozen=True)
class Verdict:
    """What to write (phase, reason, message) and whether to start the next attempt."""

    phase: Phase
    reason: str
    message: str
    retry: bool = False
    failure: Optional[dict[str, Any]] = None


def decide(failure: dict[str, Any], attempt: int, retries: int, backoff_limit: int) -> Verdict:
    """An attempt failed: fail the job (the user's error, or no retries left) or retry."""
    failure = {**failure, "attempt": attempt}
    reason, message = failure["reason"], failure["message"]
    if failure["class"] == USER:
        return Verdict(Phase.Failed, reason, message, failure=failure)
    if retries < backoff_limit:
        return Verdict(Phase.Running, Reason.Retrying.value,
                       f"attempt {attempt} failed ({reason}: {message}); attempt {attempt + 1} resumes from the latest "
                       f"checkpoint (retry {retries + 1} of {backoff_limit})", retry=True, failure=failure)
    return Verdict(Phase.Failed, reason, f"{message}; no retries left (backoffLimit {backoff_limit})", failure=failure)
