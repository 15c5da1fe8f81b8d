"""Experiment tracking as the operator sees it: the pods' environment for spec.tracking, and
status.tracking with the Tracked condition from what the pods report.

The operator never talks to MLflow (and imports no mlflow): the pods log, each to the run
tagged with the FineTuneJob's uid. What they report is the tenant's data: the ids are checked
against MLflow's shapes (kubetune_api.tracking.TrackingReport), a message is bounded, and the
URL is built here from the spec's uri, never taken from a pod. Tracking never changes a job's
phase: the Tracked condition says whether the run has it all.
"""
from __future__ import annotations

from typing import Any, Optional

from pydantic import ValidationError

from kubetune_api import FINETUNEJOB_KIND
from kubetune_api.errors import Reason
from kubetune_api.tracking import (CONDITION_TRACKED, CREDENTIAL_KEYS, ENV_NAMESPACE, ENV_TRACKING_KEY, MAX_TRACKING_MESSAGE,
                                   TrackingReport, TrackingSpec, run_url)
from kubetune_operator.conditions import FALSE, TRUE

# (type, status, reason, message) of a condition, as conditions.updated takes it.
Change = tuple[str, str, str, str]


def tracking_key(meta: dict[str, Any]) -> str:
    """The run's key: the uid of the FineTuneJob the pod works for (an evaluation block's EvalJob
    and the promotion pod share their FineTuneJob's run), else the job's own uid."""
    owner = next((ref.get("uid") for ref in meta.get("ownerReferences") or []
                  if ref.get("kind") == FINETUNEJOB_KIND and ref.get("controller")), None)
    return owner or meta["uid"]


def env(meta: dict[str, Any], spec: Optional[TrackingSpec]) -> list[dict[str, Any]]:
    """The pod's variables for spec.tracking: the run's key, the namespace (the default
    experiment) and the credentials Secret's keys, each optional (the operator never reads it)."""
    if spec is None:
        return []
    variables: list[dict[str, Any]] = [{"name": ENV_TRACKING_KEY, "value": tracking_key(meta)},
                                       {"name": ENV_NAMESPACE, "value": meta["namespace"]}]
    secret = spec.mlflow.credentials_secret
    if secret:
        variables += [{"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                      for key in CREDENTIAL_KEYS]
    return variables


def evaluation_spec(spec: Optional[TrackingSpec]) -> dict[str, Any]:
    """The tracking block of an evaluation EvalJob: its FineTuneJob's (the pod logs to the same run)."""
    return {"tracking": spec.model_dump(by_alias=True, mode="json", exclude_none=True)} if spec is not None else {}


def _reported(report: Any) -> Optional[TrackingReport]:
    """A pod's tracking report, or None when it has none or it breaks the shapes."""
    tracked = (report or {}).get("tracking") if isinstance(report, dict) else None
    if not isinstance(tracked, dict):
        return None
    try:
        return TrackingReport.model_validate(tracked)
    except ValidationError:
        return None


def _uri(spec: dict[str, Any]) -> Optional[str]:
    return ((spec.get("tracking") or {}).get("mlflow") or {}).get("uri")


def _failed(uri: str, error: str) -> Change:
    message = f"tracking to {uri} failed (the job goes on without it): {error}"[:MAX_TRACKING_MESSAGE]
    return CONDITION_TRACKED, FALSE, Reason.TrackingFailed.value, message


def mirror(obj: dict[str, Any], report: dict[str, Any]) -> tuple[dict[str, Any], list[Change]]:
    """({"tracking": status.tracking} or {}, the Tracked condition's change) from the report of
    the attempt's main pod (trainer, or evaluator)."""
    uri, tracked = _uri(obj.get("spec") or {}), _reported(report)
    if uri is None or tracked is None:
        return {}, []
    if tracked.error is not None:
        return {}, [_failed(uri, tracked.error)]
    if tracked.run_id is None or tracked.experiment_id is None:
        return {}, []
    status = {"runId": tracked.run_id, "experimentId": tracked.experiment_id,
              "url": run_url(uri, tracked.experiment_id, tracked.run_id)}
    return {"tracking": status}, [(CONDITION_TRACKED, TRUE, Reason.Tracked.value, f"logging to MLflow run {tracked.run_id}")]


def promoted(ftj: dict[str, Any], report: dict[str, Any]) -> tuple[dict[str, Any], list[Change]]:
    """status.tracking with the version the promotion pod registered (the model's name is the
    spec's), or the Tracked condition False when the promotion pod could not log."""
    spec = ftj.get("spec") or {}
    uri, tracked = _uri(spec), _reported(report)
    if uri is None or tracked is None:
        return {}, []
    if tracked.error is not None:
        return {}, [_failed(uri, f"promotion: {tracked.error}")]
    name = spec["tracking"]["mlflow"].get("registeredModel")
    if tracked.model_version is None or not name:
        return {}, []
    current = (ftj.get("status") or {}).get("tracking") or {}
    message = f"registered {name} version {tracked.model_version}" + (f" from MLflow run {current['runId']}" if current.get("runId") else "")
    return ({"tracking": {**current, "registeredModel": name, "modelVersion": tracked.model_version}},
            [(CONDITION_TRACKED, TRUE, Reason.Tracked.value, message)])
