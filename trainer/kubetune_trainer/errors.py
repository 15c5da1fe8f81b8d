"""Errors reported as the user's fault; the CLIs give each kind its own exit code, and `reason`
becomes the reason of the job's Succeeded=False condition (via the termination message)."""
from __future__ import annotations


class ConfigError(ValueError):
    """The config is valid on its own but does not fit what it names (model, modules)."""

    reason = "InvalidConfig"


class ModelSourceError(ConfigError):
    """model.path does not name a loadable model."""

    reason = "InvalidModel"


class MetricError(ConfigError):
    """A metric name that is not built in for the task and cannot be loaded."""

    reason = "UnknownMetric"


class DataError(ValueError):
    """The dataset or prompt template cannot produce training examples."""

    reason = "InvalidData"
