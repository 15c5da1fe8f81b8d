"""Reports a pod's progress and results to the operator, without any API access.

Pods hold no Kubernetes credentials: the operator alone writes a job's status. The pod prints
its report as one line of its log (`wire.REPORT_PREFIX` + compact JSON), at most once per
`min_interval` seconds except for the final line, and each line carries everything reported
so far (a later progress line keeps the lineage sent at the start), so the operator needs only
the latest. The final summary also goes to the termination message, which outlives the log.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from kubetune_api.reports import EvalPodReport, PodReport, merged, rounded
from kubetune_api.wire import ENV_TERMINATION_LOG, MAX_REPORT_BYTES, REPORT_PREFIX

log = logging.getLogger(__name__)

MAX_TERMINATION_BYTES = 4096  # Kubernetes keeps at most this much of a termination message


def fit_json(payload: dict, text_key: str, limit: int = MAX_TERMINATION_BYTES) -> str:
    """Compact JSON of `payload`, its `text_key` string cut (binary search) to fit in `limit` bytes."""

    def dump(keep: int | None = None) -> str:
        value = payload if keep is None else {**payload, text_key: payload[text_key][:keep] + "..."}
        return json.dumps(value, separators=(",", ":"))

    text = dump()
    if len(text) <= limit:  # json.dumps escapes non-ASCII, so characters are bytes
        return text
    shortest, longest = 0, len(payload[text_key])
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if len(dump(middle)) <= limit:
            shortest = middle
        else:
            longest = middle - 1
    return dump(shortest)


def _without_samples(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "samples"}


class StatusReporter:
    def __init__(self, termination_log: str | None = None, stream: TextIO | None = None, min_interval: float = 2.0):
        """Without a `stream`, report lines are skipped (kubetune-train on a laptop prints its result)."""
        self.termination_log, self.stream = termination_log, stream
        self.min_interval = min_interval
        self.state: dict[str, Any] = {}
        self._last_line = -float("inf")

    @classmethod
    def from_env(cls) -> "StatusReporter":
        """In a pod the operator launched (it sets the termination log's path): lines to stderr,
        which stays out of the CLI's result on stdout."""
        termination_log = os.environ.get(ENV_TERMINATION_LOG)
        return cls(termination_log, sys.stderr if termination_log else None)

    def report(self, report: PodReport | EvalPodReport, final: bool = False) -> None:
        """Adds `report` to what was reported; prints the whole unless a line went out too recently."""
        self.state = merged(self.state, rounded(report.model_dump(by_alias=True, exclude_none=True, mode="json")))
        now = time.monotonic()
        if self.stream is None or (not final and now - self._last_line < self.min_interval):
            return
        self._last_line = now
        line = json.dumps(self.state, separators=(",", ":"))
        if len(line) > MAX_REPORT_BYTES:  # samples are the bulk and the least needed
            line = json.dumps(_without_samples(self.state), separators=(",", ":"))
        if len(line) > MAX_REPORT_BYTES:
            log.warning("the report (%d bytes) exceeds %d bytes; not sent", len(line), MAX_REPORT_BYTES)
            return
        try:
            self.stream.write(f"\n{REPORT_PREFIX}{line}\n")  # own line, even after a progress bar's \r
            self.stream.flush()
        except (OSError, ValueError) as e:  # reporting must never stop training
            log.warning("cannot write the report line: %s", e)

    def finish(self, report: PodReport, message: str) -> None:
        """Sends the final report and writes the summary as the termination message."""
        self.report(report, final=True)
        self._write_termination({**report.model_dump(by_alias=True, exclude_none=True, mode="json"), "message": message}, "message")

    def fail(self, error: BaseException) -> None:
        payload = {"error": f"{type(error).__name__}: {error}"}
        if getattr(error, "reason", None):
            payload["reason"] = error.reason
        self._write_termination(payload, "error")

    def _write_termination(self, payload: dict, text_key: str) -> None:
        if not self.termination_log:
            return
        try:
            with open(self.termination_log, "w", encoding="utf-8") as f:
                f.write(fit_json(payload, text_key))
        except OSError as e:
            log.warning("cannot write the termination message to %s: %s", self.termination_log, e)
