"""Kueue, read from the objects it leaves behind (pure functions, no API calls).

A job with `spec.queueName` gets a Job labelled `kueue.x-k8s.io/queue-name`. Where the API
server has Job `suspend` (Kubernetes 1.21 and later; 1.21 needs the SuspendJob feature gate,
the API server drops the field otherwise) the operator creates the Job suspended: Kueue
creates a Workload for it and admits it by setting `suspend: false` (and injecting its
ResourceFlavor's node labels); until then no pod exists and the job is Queued. Kueue
suspends the Job again when it preempts or evicts it. Older servers (the local 1.20 cluster)
have no suspend: the Job carries the label only and its pod is scheduled at once.

Why a Job waits is in its Workload (`kueue.x-k8s.io/v1beta1`, labelled with the Job's uid):
the QuotaReserved, Admitted and Evicted conditions and the admission checks.
"""
from __future__ import annotations

from typing import Any, Optional

from kubetune_operator import conditions

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue creates for a Job
SUSPEND_SINCE = (1, 21)  # batch/v1 Job spec.suspend


def job_suspend_supported(version: tuple[int, int]) -> bool:
    """Whether a server of this (major, minor) version has Job spec.suspend."""
    return tuple(version) >= SUSPEND_SINCE


def queue_name(job: dict[str, Any]) -> Optional[str]:
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL) or None


def finished(job: dict[str, Any]) -> bool:
    return conditions.is_true(job, "Complete") or conditions.is_true(job, "Failed")


def queued(job: dict[str, Any]) -> bool:
    """Kueue holds the Job: it is in a queue, suspended and not finished (never admitted yet,
    or preempted or evicted and waiting to be admitted again)."""
    return bool(queue_name(job)) and bool((job.get("spec") or {}).get("suspend")) and not finished(job)


def admitted(job: dict[str, Any]) -> bool:
    """Kueue let the Job run: in a queue and not suspended (on servers without suspend, a
    queued Job always runs at once, so it counts as admitted too)."""
    return bool(queue_name(job)) and not (job.get("spec") or {}).get("suspend")


def workload_selector(job: dict[str, Any]) -> str:
    """Label selector of the Job's Workload."""
    return f"{JOB_UID_LABEL}={job['metadata']['uid']}"


def _checks(workload: dict[str, Any]) -> str:
    checks = (workload.get("status") or {}).get("admissionChecks") or []
    waiting = [f"{c.get('name')} ({c.get('state')})" for c in checks if c.get("state") != "Ready"]
    return ", ".join(waiting)


def _from_workload(queue: str, workload: dict[str, Any]) -> str:
    reserved, evicted = conditions.find(workload, "QuotaReserved"), conditions.find(workload, "Evicted")
    cluster_queue = ((workload.get("status") or {}).get("admission") or {}).get("clusterQueue")
    parts = []
    if evicted.get("status") == conditions.TRUE:
        parts.append(f"evicted by Kueue ({evicted.get('reason')}: {evicted.get('message')})")
    if not reserved:
        parts.append(f"queued in LocalQueue {queue}; Kueue has not tried to admit it yet")
    elif reserved.get("status") != conditions.TRUE and reserved.get("reason") == "Inadmissible":
        parts.append(f"Kueue cannot admit it from LocalQueue {queue}: {reserved.get('message')}")
    elif reserved.get("status") != conditions.TRUE:
        parts.append(f"waiting in LocalQueue {queue}: {reserved.get('message')}")
    elif not conditions.is_true(workload, "Admitted"):
        checks = _checks(workload)
        parts.append(f"quota reserved in ClusterQueue {cluster_queue}; waiting for admission checks"
                     + (f": {checks}" if checks else ""))
    else:
        parts.append(f"admitted by ClusterQueue {cluster_queue}; waiting for the Job to resume")
    return "; ".join(parts)


def message(job: dict[str, Any], workload: Optional[dict[str, Any]] = None) -> str:
    """A one-line status message for a queued Job: why Kueue holds it, from its Workload when
    there is one (kube.kueue_workload), else where to look."""
    queue = queue_name(job) or "?"
    if workload is not None:
        return _from_workload(queue, workload)
    meta = job.get("metadata") or {}
    hint = (f" (kubectl get workloads -n {meta['namespace']} -l {workload_selector(job)})"
            if meta.get("uid") and meta.get("namespace") else "")
    return f"queued in LocalQueue {queue}: waiting for Kueue to admit the Job{hint}"
