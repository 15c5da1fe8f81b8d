"""What a pod reports about its job, as the operator reads it.

Pods hold no API credentials. A pod prints report lines to its log (`wire.REPORT_PREFIX` +
JSON of everything reported so far) and writes its final summary to its termination message;
the operator reads the latest report line of the attempt's main pod (rank 0), else the
termination message. Both are the tenant's data (the tenant chooses the image): read with a
byte limit, validated against the report models (which carry the status schema's bounds), and
copied into the status for people to see. The operator decides nothing from them.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any, Callable, Optional

from pydantic import BaseModel, ValidationError

from kubetune_api.errors import Reason
from kubetune_api.reports import EvalPodReport, PodReport
from kubetune_api.wire import MAX_REPORT_BYTES, REPORT_PREFIX

log = logging.getLogger("kubetune.operator")
# Lines of the log's tail to look through, fewer each time the tail is longer than the byte
# limit (a long line after the report would otherwise push it out of what is read).
TAIL_LINES = (64, 8, 1)
# When the last 64 lines hold no report, this many: a trainer that logs every step writes
# hundreds of lines between two reports (one every 2 s at most).
WIDE_TAIL_LINES = 2048
READ_LIMIT = 4 * MAX_REPORT_BYTES
REASONS = frozenset(reason.value for reason in Reason)

# (namespace, pod, container, tail lines, byte limit) -> the log's text
LogReader = Callable[[str, str, str, int, int], str]


def latest_line(text: str) -> Optional[str]:
    """The JSON of the last report line in `text` (a progress bar may share its line)."""
    for line in reversed(text.splitlines()):
        at = line.rfind(REPORT_PREFIX)
        if at >= 0:
            return line[at + len(REPORT_PREFIX):]
    return None


def validated(data: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The report's fields that `model` accepts, as the status spells them; {} for anything else.
    The image in its lineage is the operator's to say, never the pod's."""
    if not isinstance(data, dict):
        return {}
    fields = {key: value for key, value in data.items() if key in model.model_fields}
    try:
        report = model.model_validate(fields).model_dump(by_alias=True, exclude_none=True, mode="json")
    except ValidationError as invalid:
        log.warning(f"a pod's report was refused: {invalid.error_count()} invalid fields, e.g. {invalid.errors()[0]['loc']}")
        return {}
    (report.get("lineage") or {}).pop("image", None)
    return report


def from_log(read: LogReader, namespace: str, pod: str, container: str, model: type[BaseModel]) -> Optional[dict[str, Any]]:
    """The latest report line in the container's log, validated; None when there is none or the
    log cannot be read (the pod is gone, or the node serves no logs)."""
    try:
        line = _latest_report_line(functools.partial(read, namespace, pod, container))
    except Exception as exc:  # noqa: BLE001 - any failure to read means: no report from the log
        log.debug(f"cannot read the log of {namespace}/{pod}: {exc}")
        return None
    if line is None or len(line) > MAX_REPORT_BYTES:
        return None
    try:
        return validated(json.loads(line), model)
    except ValueError:
        return None


def _latest_report_line(read: Callable[[int, int], str]) -> Optional[str]:
    """The last report line of the tail: of its last 64 lines (fewer while they pass the byte
    limit), else of its last WIDE_TAIL_LINES. The byte limit keeps the start of what the lines
    select, so a cut wide read still holds the older reports, whole lines only."""
    for lines in TAIL_LINES:
        text = read(lines, READ_LIMIT)
        if len(text.encode()) < READ_LIMIT:
            break
    found = latest_line(text)
    if found is not None or lines != TAIL_LINES[0]:
        return found
    wide = read(WIDE_TAIL_LINES, READ_LIMIT)
    if len(wide.encode()) >= READ_LIMIT:
        wide = wide[:wide.rfind("\n") + 1]
    return latest_line(wide)


def model_for(kind: str) -> type[BaseModel]:
    return EvalPodReport if kind == "EvalJob" else PodReport


def failure_reason(reported: Any, fallback: str) -> str:
    """A pod may name its error's reason, but only as one of the API's reasons: it becomes a
    condition reason and a metric label, so nothing else gets through."""
    return reported if isinstance(reported, str) and reported in REASONS else fallback
