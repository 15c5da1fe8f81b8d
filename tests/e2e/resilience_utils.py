"""Helpers for the resilience tests (test_chaos.py, test_malformed_specs.py): the operator's
log since a point, the tracebacks in it that went through our code, and children by owner."""
from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any, Optional

from kubectl_utils import get_json

OWNER_LABELS = ("kubetune.io/finetunejob", "kubetune.io/evaljob")
_LOG_LINE = re.compile(r"^\[\d{4}-\d{2}-\d{2} ")


def log_since(path: Path, offset: int) -> str:
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def tracebacks(text: str, namespace: Optional[str] = None) -> list[str]:
    """Each traceback in an operator log that has a frame in kubetune_operator, with the log
    line before it (kopf names the object there: "[namespace/name] Handler ... failed");
    with `namespace`, only those about an object in it."""
    lines, found = text.splitlines(), []
    for i, line in enumerate(lines):
        if not line.startswith("Traceback (most recent call last)"):
            continue
        end = next((j for j in range(i + 1, len(lines)) if _LOG_LINE.match(lines[j])), len(lines))
        header = lines[i - 1] if i else ""
        block = "\n".join([header, *lines[i:end]])
        if "kubetune_operator" in block and (namespace is None or f"[{namespace}/" in header):
            found.append(block)
    return found


def unhandled(text: str) -> list[str]:
    """Log lines of errors nothing caught: kopf's own crash reports, or a top-level exit."""
    words = ("Unhandled", "crashed", "Root task", "Fatal")
    return [line for line in text.splitlines() if any(word in line for word in words)]


def by_owner(kind: str, namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Pods (or Jobs) of the namespace grouped by the kubetune job that owns them (its label)."""
    owned: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for item in get_json(kind, "-n", namespace)["items"]:
        labels = item["metadata"].get("labels") or {}
        owner = next((labels[key] for key in OWNER_LABELS if key in labels), None)
        if owner is not None:
            owned[owner].append(item)
    return owned


def condition_of(obj: dict[str, Any], ctype: str = "Succeeded") -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == ctype), {})
