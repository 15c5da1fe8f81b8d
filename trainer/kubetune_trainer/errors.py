"""Errors the trainer reports as the user's fault; the CLI gives each kind its own exit code."""
from __future__ import annotations


class ConfigError(ValueError):
    """The config is valid on its own but does not fit what it names (model, modules)."""


class ModelSourceError(ConfigError):
    """model.path does not name a loadable model."""


class DataError(ValueError):
    """The dataset or prompt template cannot produce training examples."""
