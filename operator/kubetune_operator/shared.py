"""What the operator's handlers share: its settings, per-object locks and status helpers."""
from __future__ import annotations

import hashlib
import json
import threading
import zlib
from datetime import datetime
from typing import Any

from kubetune_operator import conditions
from kubetune_operator.settings import OperatorSettings

# Job and pod events for one job arrive on different workers: the read-decide-patch cycle of
# one object is serialized so an event or a histogram sample is never doubled. A fixed set of
# locks, picked by hash: the table cannot grow with the names and labels tenants choose.
LOCK_STRIPES = 256
_stripes = [threading.RLock() for _ in range(LOCK_STRIPES)]


def lock(kind: str, namespace: str, name: str) -> threading.RLock:
    return _stripes[zlib.crc32(f"{kind}/{namespace}/{name}".encode()) % LOCK_STRIPES]


class _Config:
    """The operator's settings, set once at startup from kopf's memo."""

    settings = OperatorSettings()
    # Whether Jobs have spec.suspend (Kubernetes >= 1.21): Kueue admits Jobs created suspended.
    job_suspend = False
    # Whether Jobs may be Indexed with stable pod hostnames (Kubernetes >= 1.22): one Job per multi-node attempt.
    indexed_jobs = False


config = _Config()
now = conditions.now


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Whether the patch says something new (condition timestamps aside)."""
    def essence(status: dict[str, Any]) -> Any:
        conds = {c.get("type"): {k: c.get(k) for k in ("status", "reason", "message", "observedGeneration")}
                 for c in status.get("conditions") or []}
        return {k: status.get(k) for k in patch if k != "conditions"}, conds
    return essence(current) != essence({**current, **patch})


def digest(value: Any) -> str:
    """sha256 of `value` as canonical JSON (sorted keys, no spaces): equal objects, equal digests."""
    return "sha256:" + hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
