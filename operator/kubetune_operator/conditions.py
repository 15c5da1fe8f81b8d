"""A job's conditions, read and written in one place, on api.ConditionStatus.

A condition moves its lastTransitionTime only when its status changes, as Kubernetes API
conventions ask; its reason and message may change at any time.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from kubetune_api.resources import ConditionStatus

TRUE, FALSE, UNKNOWN = ConditionStatus.true.value, ConditionStatus.false.value, ConditionStatus.unknown.value
DECIDED = (TRUE, FALSE)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def find(obj: Optional[dict[str, Any]], ctype: str) -> dict[str, Any]:
    """The condition of type `ctype` of a job, a Job or a pod ({} when it has none)."""
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def status_of(obj: Optional[dict[str, Any]], ctype: str) -> Optional[str]:
    return find(obj, ctype).get("status")


def reason_of(obj: Optional[dict[str, Any]], ctype: str) -> Optional[str]:
    return find(obj, ctype).get("reason")


def is_true(obj: Optional[dict[str, Any]], ctype: str) -> bool:
    return status_of(obj, ctype) == TRUE


def upsert(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
           generation: Optional[int], at: str) -> list[dict[str, Any]]:
    """`conditions` with `ctype` set."""
    out = [dict(c) for c in conditions if c.get("type") != ctype]
    previous = next((c for c in conditions if c.get("type") == ctype), None)
    changed = previous is None or previous.get("status") != status
    out.append({"type": ctype, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": at if changed else previous.get("lastTransitionTime", at),
                "observedGeneration": generation})
    return out


def updated(obj: dict[str, Any], *changes: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    """obj's conditions with each (type, status, reason, message) of `changes` set."""
    conditions = list((obj.get("status") or {}).get("conditions") or [])
    for ctype, status, reason, message in changes:
        conditions = upsert(conditions, ctype, status, reason, message, obj["metadata"].get("generation"), now())
    return conditions
