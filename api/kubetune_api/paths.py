"""Where pods may write: rules decidable from the spec alone (no filesystem), shared by the
API models, the operator and the pods."""
from __future__ import annotations

import posixpath


def check_relative_stays_inside(path: str, field: str) -> str:
    """A relative path must not climb out of the directory it is relative to."""
    if "\x00" in path:
        raise ValueError(f"{field}: NUL character in path")
    if not path.startswith("/"):
        normal = posixpath.normpath(path)
        if normal == ".." or normal.startswith("../"):
            raise ValueError(f"{field}: {path!r} leaves the working directory ('..'); use a path inside it "
                             "or an absolute path on one of the job's volumes")
    return path


def is_under(path: str, root: str) -> bool:
    """Whether absolute `path` lies in directory `root` once '.' and '..' are resolved (lexically)."""
    path, root = posixpath.normpath(path), posixpath.normpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")
