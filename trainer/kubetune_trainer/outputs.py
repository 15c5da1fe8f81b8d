"""Where a pod may write: output.path must resolve inside an allowed root.

The allowed roots are the working directory and the directories listed, colon-separated, in
KUBETUNE_WRITABLE_ROOTS (the job's writable volumes, set by the operator). Paths are compared
after os.path.realpath, so neither '..' nor a symlink (say, in the working directory, pointing
at /etc) leads outside. Without the variable (kubetune-train on a laptop) nothing is refused;
set but empty, only the working directory is allowed.

Light: no torch at import (the check phase, kubetune_trainer.checks, uses it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from kubetune_api.errors import ConfigError
from kubetune_api.paths import is_under
from kubetune_api.wire import ENV_WRITABLE_ROOTS


def writable_roots() -> Optional[list[str]]:
    """The resolved allowed roots, or None when writing is not restricted."""
    listed = os.environ.get(ENV_WRITABLE_ROOTS)
    if listed is None:
        return None
    return [os.path.realpath(root) for root in (os.getcwd(), *listed.split(":")) if root]


def resolve_output_dir(path: str, field: str = "output.path") -> Path:
    """The real (symlink-free, absolute) path of `path`; ConfigError naming `field` when it lies
    outside every allowed root."""
    if "\x00" in path:
        raise ConfigError(f"{field}: NUL character in path")
    real = os.path.realpath(path)
    roots = writable_roots()
    if roots is not None and not any(is_under(real, root) for root in roots):
        shown = f" (resolves to {real})" if real != os.path.abspath(path) else ""
        raise ConfigError(f"{field} {path!r}{shown} is outside the directories this pod may write: "
                          f"{', '.join(roots)}; use a path in the working directory or on one of the job's volumes")
    return Path(real)

