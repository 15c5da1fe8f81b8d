"""Operator settings, read once at startup from flags and environment."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from kubetune_api.wire import DEFAULT_IMAGE
from kubetune_operator.policy import Policy


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_float(name: str) -> Optional[float]:
    value = os.environ.get(name)
    return float(value) if value else None


@dataclass(frozen=True)
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty: all namespaces
    metrics_port: int = field(default_factory=lambda: _env_int("KUBETUNE_METRICS_PORT", 8080))
    metrics_address: str = field(default_factory=lambda: os.environ.get("KUBETUNE_METRICS_ADDRESS", "0.0.0.0"))
    health_port: int = field(default_factory=lambda: _env_int("KUBETUNE_HEALTH_PORT", 8081))
    # Image of trainer and evaluator pods whose spec names none.
    trainer_image: str = field(default_factory=lambda: os.environ.get("KUBETUNE_TRAINER_IMAGE", DEFAULT_IMAGE))
    workers: int = field(default_factory=lambda: _env_int("KUBETUNE_WORKERS", 8))
    # How often an EvalJob re-checks a FineTuneJob it waits for.
    wait_seconds: int = field(default_factory=lambda: _env_int("KUBETUNE_WAIT_SECONDS", 10))
    # Price of one GPU-hour: status.usage.estimatedCost and kubetune_estimated_cost_total; unset: no cost.
    gpu_hour_price: Optional[float] = field(default_factory=lambda: _env_float("KUBETUNE_GPU_HOUR_PRICE"))
    # Seconds between reads of a running job's report (its pod's log); environment only: kopf's
    # timer takes it when the handlers are registered.
    report_seconds: float = field(default_factory=lambda: _env_float("KUBETUNE_REPORT_SECONDS") or 10.0)
    # Seconds between looks at serving that waits on someone else (KServe not installed, a name
    # taken, a refusal); pending serving is looked at every 10 s.
    serving_stalled_seconds: float = field(default_factory=lambda: _env_float("KUBETUNE_SERVING_STALLED_SECONDS") or 300.0)
    # `evaluate` metrics EvalJobs may name (each runs a script in the pod): none unless listed.
    allowed_evaluate_metrics: tuple[str, ...] = field(default_factory=lambda: tuple(
        name.strip() for name in os.environ.get("KUBETUNE_ALLOWED_EVALUATE_METRICS", "").split(",") if name.strip()))
    currency: str = field(default_factory=lambda: os.environ.get("KUBETUNE_CURRENCY", "USD"))
    # Schedulers that run scheduler-plugins' Coscheduling plugin: a multi-node job whose pods'
    # schedulerName (its runtime's) is one of them gets a PodGroup (gang.py).
    coscheduling_schedulers: tuple[str, ...] = field(default_factory=lambda: tuple(
        name.strip() for name in os.environ.get("KUBETUNE_COSCHEDULING_SCHEDULERS", "scheduler-plugins-scheduler").split(",")
        if name.strip()))
    verbose: bool = False
    # The validating admission webhook (admission.py, webhook.py); port 0: off.
    webhook_port: int = field(default_factory=lambda: _env_int("KUBETUNE_WEBHOOK_PORT", 0))
    webhook_address: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_ADDRESS", "0.0.0.0"))
    # How the API server reaches it: https://HOST:PORT, or the Service NAMESPACE/NAME[:PORT].
    webhook_host: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_HOST", ""))
    webhook_service: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_SERVICE", ""))
    webhook_configuration: str = field(
        default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_CONFIGURATION", "kubetune-operator"))
    webhook_failure_policy: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_FAILURE_POLICY", "Fail"))
    webhook_timeout: int = field(default_factory=lambda: _env_int("KUBETUNE_WEBHOOK_TIMEOUT", 10))
    # The serving certificate and key the chart mounts (its Secret): with both, the operator
    # serves with them and leaves the ValidatingWebhookConfiguration (the chart's) alone;
    # without, it makes its own CA and keeps the configuration (outside a cluster: development).
    webhook_cert_file: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_CERT_FILE", ""))
    webhook_key_file: str = field(default_factory=lambda: os.environ.get("KUBETUNE_WEBHOOK_KEY_FILE", ""))
    # The operator's own user as the API server names it (the status webhook lets only it write
    # status); empty: derived from the credentials it loaded at startup (identity.py).
    operator_username: str = field(default_factory=lambda: os.environ.get("KUBETUNE_OPERATOR_USERNAME", ""))
    # What a job's spec may set itself: runtimes mandatory, or allowlists (policy.py; the chart's policy.*).
    policy: Policy = field(default_factory=Policy.from_env)
