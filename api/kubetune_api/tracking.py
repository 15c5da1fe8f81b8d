"""Experiment tracking (MLflow): a job's `spec.tracking`, what its pods report about the run, and
`status.tracking`. Light to import: pydantic only.

The pods log (the trainer on rank 0, the evaluator, the promotion pod), each to the same run,
found by the tag TAG_JOB_UID (the FineTuneJob's uid): a retry or a resume continues it. The
operator never talks to MLflow: it mirrors what the pods report, validated, and builds the run's
URL from the spec's uri. A tracking server that is down never fails the job.
"""
from __future__ import annotations

from typing import Annotated, Optional

from pydantic import Field, StringConstraints

from kubetune_api.base import DNS_SUBDOMAIN_MAX, DNS_SUBDOMAIN_PATTERN, MAX_PATH, ApiModel, PathText

# http(s) only, no user:password@ and no query or fragment (credentials come from a Secret or the
# runtime, never the spec, which the status, events and logs repeat), no whitespace; a path prefix
# is allowed (a server behind a proxy).
MLFLOW_URI_PATTERN = r"^https?://[^/@\s?#]+(/[^@\s?#]*)?$"
# Short enough that run_url's suffix keeps status.tracking.url within its bound (MAX_PATH).
MAX_URI = 2048
EXPERIMENT_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_./ ]*$"
REGISTERED_MODEL_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
MAX_NAME = 256
# What MLflow's ids look like: a run is 32 hex digits, experiments and versions are integers.
RUN_ID_PATTERN = r"^[0-9a-f]{32}$"
NUMBER_PATTERN = r"^[0-9]{1,19}$"
# A tracking failure's message in a report and in the Tracked condition.
MAX_TRACKING_MESSAGE = 1024
TrackingMessage = Annotated[str, StringConstraints(max_length=MAX_TRACKING_MESSAGE)]

# The pods' environment: the run's key (the FineTuneJob's uid) and the namespace (the default experiment).
ENV_TRACKING_KEY = "KUBETUNE_TRACKING_KEY"
ENV_NAMESPACE = "KUBETUNE_NAMESPACE"
TAG_JOB_UID = "kubetune.io/job-uid"
# Credentials a pod may get from spec.tracking.mlflow.credentialsSecret (each key optional).
CREDENTIAL_KEYS = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
CONDITION_TRACKED = "Tracked"


class MlflowSpec(ApiModel):
    uri: str = Field(pattern=MLFLOW_URI_PATTERN, max_length=MAX_URI,
                     description="The MLflow tracking server, http:// or https:// (no user:password@ in it: credentials come from credentialsSecret or the runtime's env).")
    experiment: Optional[str] = Field(None, pattern=EXPERIMENT_PATTERN, max_length=MAX_NAME,
                                      description="The experiment the run goes to (created when missing); unset: the job's namespace.")
    registered_model: Optional[str] = Field(
        None, pattern=REGISTERED_MODEL_PATTERN, max_length=MAX_NAME,
        description="Register the promoted model as a new version of this registered model (needs promotion; the promotion pod logs the model and creates the version).")
    credentials_secret: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX,
        description=f"A Secret in the job's namespace whose keys {', '.join(CREDENTIAL_KEYS)} (each optional) the pods get as environment variables; the operator never reads it.")
    log_model: bool = Field(True, description="Log the trained adapter or model, the summary and the model card as the run's artifacts.")


class TrackingSpec(ApiModel):
    """Where the job's pods log params, metrics, scores and the model (docs/tracking.md)."""

    mlflow: MlflowSpec = Field(description="An MLflow tracking server.")


class TrackingReport(ApiModel):
    """What a pod reports about its run: ids only (the URL is the operator's), or why tracking stopped."""

    run_id: Optional[str] = Field(None, pattern=RUN_ID_PATTERN, max_length=32, description="The MLflow run id.")
    experiment_id: Optional[str] = Field(None, pattern=NUMBER_PATTERN, max_length=19, description="The experiment's id.")
    model_version: Optional[str] = Field(None, pattern=NUMBER_PATTERN, max_length=19, description="The registered model version (the promotion pod).")
    error: Optional[TrackingMessage] = Field(None, description="Why tracking was switched off in this pod (the server down or refusing).")


class TrackingStatus(ApiModel):
    run_id: Optional[str] = Field(None, pattern=RUN_ID_PATTERN, max_length=32, description="The MLflow run of the job.")
    experiment_id: Optional[str] = Field(None, pattern=NUMBER_PATTERN, max_length=19, description="Its experiment's id.")
    url: Optional[PathText] = Field(None, description="The run in the MLflow UI (built from spec.tracking.mlflow.uri and the ids).")
    registered_model: Optional[str] = Field(None, max_length=MAX_NAME, description="spec.tracking.mlflow.registeredModel, once a version is registered.")
    model_version: Optional[str] = Field(None, pattern=NUMBER_PATTERN, max_length=19, description="The version the promotion registered.")


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI."""
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
