"""Where model.path points: a checkpoint directory, a .gguf file, pkg://<package>/<file>, or
a remote source (hf://, s3://, gs://, az://) made local by kubetune_trainer.sources.

Light to import (no torch): the pod's check phase (kubetune_trainer.checks) resolves
model.path with it before anything loads.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from kubetune_api.errors import ModelSourceError
from kubetune_trainer import sources

PKG_SCHEME = "pkg://"


def resolve_path(path: str, field: str = "model.path") -> Path:
    """The absolute location of `path` (the value of `field`); relative paths resolve against the cwd."""
    if sources.is_remote_source(path):
        location = sources.fetch_model(path, field).local
    elif path.startswith(PKG_SCHEME):
        package, _, file = path[len(PKG_SCHEME):].partition("/")
        if not package or not file:
            raise ModelSourceError(f"{field} {path!r}: expected pkg://<package>/<file>")
        # find_spec locates the package without importing it: a model package's __init__ may
        # import modules the trainer image does not have.
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError) as e:
            raise ModelSourceError(f"{field} {path!r}: cannot look up package {package!r}: {e}") from e
        if spec is None:
            raise ModelSourceError(f"{field} {path!r}: package {package!r} is not installed")
        if not spec.submodule_search_locations:
            raise ModelSourceError(f"{field} {path!r}: {package!r} is a module, not a package directory")
        location = Path(spec.submodule_search_locations[0]) / file
    else:
        location = Path(path).expanduser().absolute()
    if not location.exists():
        raise ModelSourceError(f"{field} {path!r}: {location} does not exist")
    return location


def locate_model(path: str, field: str = "model.path") -> Path:
    """resolve_path, and what is there has a model's shape: a checkpoint directory (with
    config.json) or a .gguf file. ModelSourceError (reason InvalidModel) otherwise."""
    location = resolve_path(path, field)
    if location.is_dir():
        if not (location / "config.json").is_file():
            raise ModelSourceError(f"{field} {path!r}: {location} has no config.json, so it is not a checkpoint")
    elif location.suffix.lower() != ".gguf":
        raise ModelSourceError(f"{field} {path!r}: {location} is neither a checkpoint directory nor a .gguf file")
    return location
