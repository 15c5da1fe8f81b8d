"""status.pods, the ledger of every pod a job ran, and status.usage summed from it.

Pods go away (a suspend deletes the Job, an eviction deletes the pod), but what they used
must still count, over every attempt. So each sync records what it sees of each pod by name,
and a pod no longer listed keeps its last record: its running time up to when it was last seen.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from kubetune_api.base import MAX_RECORDS
from kubetune_operator import observe
from kubetune_operator.attempts import ATTEMPT_LABEL

GPU_RESOURCE = "nvidia.com/gpu"


def _timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _pod_gpus(pod: dict[str, Any]) -> int:
    containers = (pod.get("spec") or {}).get("containers") or []
    return sum(int(((c.get("resources") or {}).get("limits") or {}).get(GPU_RESOURCE, 0)) for c in containers)


def record(pod: dict[str, Any], now: str) -> Optional[dict[str, Any]]:
    """A pod's ledger entry; None when its container never started."""
    state = observe.main_status(pod).get("state") or {}
    ran = state.get("terminated") or state.get("running") or {}
    if not ran.get("startedAt"):
        return None
    meta = pod["metadata"]
    return {"name": meta["name"], "attempt": int((meta.get("labels") or {}).get(ATTEMPT_LABEL, 1)),
            "gpus": _pod_gpus(pod), "startedAt": ran["startedAt"], "finishedAt": ran.get("finishedAt") or now,
            "running": "running" in state and "terminated" not in state}


def update(records: list[dict[str, Any]], pods: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """The ledger after seeing `pods`: their entries replaced, entries of pods gone kept."""
    merged = {r["name"]: dict(r) for r in records}
    for pod in pods:
        entry = record(pod, now)
        if entry is not None:
            merged[entry["name"]] = {**merged.get(entry["name"], {}), **entry}  # keeps its tokens
    for name, entry in merged.items():
        if entry.get("running") and not any(p["metadata"]["name"] == name for p in pods):
            entry.update(running=False, lost=True)  # gone while running: it ran until last seen
    ordered = sorted(merged.values(), key=lambda r: (r["attempt"], r["startedAt"], r["name"]))
    return ordered[-MAX_RECORDS:]


def count_tokens(records: list[dict[str, Any]], pod_name: str, progress: dict[str, Any]) -> list[dict[str, Any]]:
    """The ledger with the tokens the pod `pod_name` trained on (its report's trainTokens less
    what it resumed with), so usage adds up every attempt's tokens, even one that was lost.
    What a pod reports is its own claim: it only ever raises the pod's count, and counts only
    for usage, never for a decision."""
    trained = progress.get("trainTokens")
    if not isinstance(trained, int):
        return records
    tokens = max(trained - (progress.get("resumedTokens") or 0), 0)
    return [{**r, "tokens": max(r.get("tokens") or 0, tokens)} if r["name"] == pod_name else r for r in records]


def _seconds(entry: dict[str, Any]) -> float:
    return max((_timestamp(entry["finishedAt"]) - _timestamp(entry["startedAt"])).total_seconds(), 0.0)


def usage(records: list[dict[str, Any]], gpu_hour_price: Optional[float] = None, currency: str = "USD") -> dict[str, Any]:
    """status.usage from the ledger: GPU-seconds, pod-seconds, pods that started, the tokens
    trained on over every attempt and, with a price per GPU-hour, the estimated cost."""
    gpu_seconds = round(sum(_seconds(r) * r["gpus"] for r in records), 1)
    out: dict[str, Any] = {"gpuSeconds": gpu_seconds, "podSeconds": round(sum(_seconds(r) for r in records), 1),
                           "attempts": len(records)}
    if any("tokens" in r for r in records):
        out["trainingTokens"] = sum(r.get("tokens") or 0 for r in records)
    if gpu_hour_price is not None:
        out.update(estimatedCost=round(gpu_seconds / 3600 * gpu_hour_price, 4), currency=currency)
    return out
