"""What every part of the agent shares: the node's fixed facts, the API's timestamp format,
the two ways a pod can fail to start, and the logger."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

HOST_IP = "127.0.0.1"
NODE_RESOURCES = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi",
                  "nvidia.com/gpu": "4"}
FINAL = ("Succeeded", "Failed")

log = logging.getLogger("node-agent")


def now() -> str:
    """The API's timestamp format, to the second (as the kubelet reports)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotReady(Exception):
    """The pod cannot start yet (missing configMap, secret, token...): retried later."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Unsupported(Exception):
    """The pod asks for something this agent cannot do: the pod fails."""


def safely(fn, *args):
    """Runs a background chore whose failure must not stop its loop; logs it instead."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("%s failed", getattr(fn, "__name__", fn))
