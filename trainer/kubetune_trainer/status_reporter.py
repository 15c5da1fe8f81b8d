"""Reports a trainer pod's progress into its FineTuneJob's status and termination message.

Inside a cluster (KUBETUNE_JOB_NAME and KUBETUNE_JOB_NAMESPACE set) it merge-patches the
job's status subresource, at most once per `min_interval` seconds except for the final patch.
A failed patch is only a warning: the termination message, which the operator reads when the
pod ends, carries the final result either way.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time

from kubetune_api.reports import EvalPodReport, PodReport

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"
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


class StatusReporter:
    def __init__(self, job_name: str | None = None, namespace: str | None = None, termination_log: str | None = None,
                 api=None, min_interval: float = 2.0):
        """`api` is a kubernetes CustomObjectsApi; without one, status patches are skipped."""
        self.job_name, self.namespace, self.api = job_name, namespace, api
        self.termination_log = termination_log
        self.min_interval = min_interval
        self._last_patch = -float("inf")

    @classmethod
    def from_env(cls) -> "StatusReporter":
        name, namespace = os.environ.get("KUBETUNE_JOB_NAME"), os.environ.get("KUBETUNE_JOB_NAMESPACE")
        api = None
        if name and namespace:
            try:
                from kubernetes import client, config

                # A kubeconfig if there is one, else the pod's service account. It prints which
                # to stdout; keep stdout for the CLI's result.
                with contextlib.redirect_stdout(sys.stderr):
                    config.load_config()
                api = client.CustomObjectsApi()
            except Exception as e:  # noqa: BLE001 - reporting must never stop training
                log.warning("cannot reach the Kubernetes API, status will not be updated: %s", e)
        return cls(name, namespace, os.environ.get("KUBETUNE_TERMINATION_LOG"), api)

    def report(self, report: PodReport | EvalPodReport, final: bool = False) -> None:
        """Patches the job status with `report`, unless one was sent too recently."""
        if self.api is None:
            return
        now = time.monotonic()
        if not final and now - self._last_patch < self.min_interval:
            return
        self._last_patch = now
        try:
            self.api.patch_namespaced_custom_object_status(
                # The operator sets KUBETUNE_JOB_PLURAL=evaljobs in evaluator pods.
                group=GROUP, version=VERSION, namespace=self.namespace, name=self.job_name,
                plural=os.environ.get("KUBETUNE_JOB_PLURAL", PLURAL),
                body=report.as_status_patch(),
                # A JSON merge patch: only the fields sent change (the client's default, pinned here).
                _content_type="application/merge-patch+json",
            )
        except Exception as e:  # noqa: BLE001 - reporting must never stop training
            log.warning("status patch for %s/%s failed: %s", self.namespace, self.job_name, e)

    def finish(self, report: PodReport, message: str) -> None:
        """Sends the final status and writes the summary as the termination message."""
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
