"""The library versions a run used, recorded in its summary (training) or scores (evaluation)."""
from __future__ import annotations

import platform
from importlib import metadata

COMMON = ("kubetune", "torch", "transformers", "peft")


def library_versions(*extra: str) -> dict[str, str | None]:
    """Python's version and each package's (None when not installed): COMMON, then `extra`."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in (*COMMON, *extra):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions
