"""What the operator's handlers share: its settings, per-object locks and status helpers."""
from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Optional

from kubetune_operator import observe
from kubetune_operator.settings import OperatorSettings

# Job and pod events for one job arrive on different workers: serialize the
# read-decide-patch cycle per object so an event or a histogram sample is never doubled.
locks: defaultdict[tuple[str, str, str], threading.Lock] = defaultdict(threading.Lock)


class _Config:
    """The operator's settings, set once at startup from kopf's memo."""

    settings = OperatorSettings()
    # Whether Jobs have spec.suspend (Kubernetes >= 1.21): Kueue admits Jobs created suspended.
    job_suspend = False


config = _Config()


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def condition_of(obj: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})


def conditions(obj: dict[str, Any], ctype: str, status: str, reason: str, message: str) -> list[dict[str, Any]]:
    """obj's conditions with `ctype` set (its transition time moves only when status changes)."""
    return observe.upsert_condition(list((obj.get("status") or {}).get("conditions") or []), ctype, status, reason,
                                    message, obj["metadata"].get("generation"), now())


def changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether the patch says something new (condition timestamps aside)."""
    def essence(status: dict[str, Any]) -> Any:
        conds = {c.get("type"): {k: c.get(k) for k in ("status", "reason", "message", "observedGeneration")}
                 for c in status.get("conditions") or []}
        return {k: status.get(k) for k in patch if k != "conditions"}, conds
    return essence(current) != essence({**current, **patch})


def reason_of(obj: Optional[dict[str, Any]], ctype: str) -> Optional[str]:
    return condition_of(obj or {}, ctype).get("reason")
