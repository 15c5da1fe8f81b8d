"""Decisions around a job's life besides its attempts: when a finished job expires
(ttlSecondsAfterFinished) and when a job still waits for its pod. Registered in `handlers`."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Optional

import kubetune_api as api
from kubetune_operator import conditions, shared

FINAL = (api.Phase.Succeeded.value, api.Phase.Failed.value)
# Pending reasons under which the pod may never come: the Job's FailedCreate events say why.
AWAITING_POD = {api.Reason.JobCreated.value, api.Reason.QuotaExceeded.value}


def settled(status: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Finished, with the evaluation and promotion that follow training decided too."""
    if status.get("phase") not in FINAL:
        return False
    follow = [(api.CONDITION_EVALUATED, "evaluation"), (api.CONDITION_PROMOTED, "promotion")]
    obj = {"status": status}
    return all(conditions.status_of(obj, ctype) in conditions.DECIDED for ctype, key in follow
               if spec.get(key) and status.get("phase") == api.Phase.Succeeded.value)


def expires_at(status: dict[str, Any], spec: dict[str, Any]) -> Optional[Any]:
    """When a settled job with ttlSecondsAfterFinished is to be deleted: that long after it
    finished and its last condition changed."""
    finished = status.get("completionTime")
    if spec.get("ttlSecondsAfterFinished") is None or not finished or not settled(status, spec):
        return None
    last = max([shared.parse_time(finished)] + [shared.parse_time(c["lastTransitionTime"])
               for c in status.get("conditions") or [] if c.get("lastTransitionTime")])
    return last + timedelta(seconds=spec["ttlSecondsAfterFinished"])


def awaiting_pod(status: dict[str, Any]) -> bool:
    return (status.get("phase") == api.Phase.Pending.value
            and conditions.reason_of({"status": status}, api.CONDITION_SUCCEEDED) in AWAITING_POD)


def gathering_ranks(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """A multi-node job, not over, whose current attempt has not had every rank's pod start yet
    (the ledger, status.pods): its gang timeout may fall due (gang.py)."""
    nodes = (spec.get("resources") or {}).get("nodes") or 1
    if nodes <= 1 or status.get("phase") not in (api.Phase.Pending.value, api.Phase.Running.value):
        return False
    attempt = status.get("attempt") or 1
    return sum(1 for r in status.get("pods") or [] if r.get("attempt", 1) == attempt) < nodes
