"""Where model.path points: a checkpoint directory, a .gguf file or pkg://<package>/<file>.

Light to import (no torch): the operator resolves model paths before launching a pod.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from kubetune_api.errors import ModelSourceError

PKG_SCHEME = "pkg://"


def resolve_path(path: str) -> Path:
    """The absolute location of model.path; relative paths resolve against the cwd."""
    if path.startswith(PKG_SCHEME):
        package, _, file = path[len(PKG_SCHEME):].partition("/")
        if not package or not file:
            raise ModelSourceError(f"model.path {path!r}: expected pkg://<package>/<file>")
        # find_spec locates the package without importing it: a model package's __init__ may
        # import modules the trainer image does not have.
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError) as e:
            raise ModelSourceError(f"model.path {path!r}: cannot look up package {package!r}: {e}") from e
        if spec is None:
            raise ModelSourceError(f"model.path {path!r}: package {package!r} is not installed")
        if not spec.submodule_search_locations:
            raise ModelSourceError(f"model.path {path!r}: {package!r} is a module, not a package directory")
        location = Path(spec.submodule_search_locations[0]) / file
    else:
        location = Path(path).expanduser().absolute()
    if not location.exists():
        raise ModelSourceError(f"model.path {path!r}: {location} does not exist")
    return location
