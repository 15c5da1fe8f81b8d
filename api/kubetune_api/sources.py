"""The grammar of the URIs a spec may name a model, data or an output by, decided from the
string alone: the API models refuse a malformed one at apply, and the trainer parses the same
way before it resolves one.

    hf://<org>/<name>[@<revision>]              a model repo on the Hugging Face Hub (or a mirror)
    hf://<org>/<name>[@<revision>]/<path>       a file in a dataset repo
    s3://<bucket>/<key>, gs://..., az://...     an object (a .gguf file, a data file) or a prefix
                                                (a checkpoint directory)
Light: the standard library only.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

HF_SCHEME = "hf://"
PKG_SCHEME = "pkg://"
OBJECT_STORE_SCHEMES = ("s3", "gs", "az")
# The fsspec package each object-store scheme needs (the trainer image ships s3fs only).
OBJECT_STORE_PACKAGES = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}

# The Hub's repo names: letters, digits, '-', '_', '.', at most 96, no '--' or '..' and not
# starting or ending with '-' or '.' (huggingface_hub's validate_repo_id).
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
# Git ref names and commit shas, as the Hub takes them in a URL (refs/pr/1 has slashes).
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}$")
COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
# S3's bucket rules, loosened to cover GCS (underscores) and Azure containers.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,221}[A-Za-z0-9]$")
_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: Optional[str]  # None: the repo's default branch (main)
    path: Optional[str] = None  # the file in a dataset repo

    @property
    def revision_or_main(self) -> str:
        return self.revision or "main"


@dataclass(frozen=True)
class ObjectRef:
    scheme: str  # s3, gs or az
    bucket: str
    key: str  # '' for the whole bucket

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}".rstrip("/")


def uri_scheme(value: str) -> Optional[str]:
    """'s3', 'hf', 'pkg', 'https' ... in lower case, or None for a plain path."""
    match = _URI_SCHEME.match(value)
    return match.group(1).lower() if match else None


def is_hub(value: str) -> bool:
    return uri_scheme(value) == "hf"


def is_object_store(value: str) -> bool:
    return uri_scheme(value) in OBJECT_STORE_SCHEMES


def _check_revision(revision: str, field: str, value: str, slashes: bool) -> None:
    if not _REVISION.match(revision) or ".." in revision or "//" in revision or revision.endswith(("/", ".lock")):
        raise ValueError(f"{field}: {value!r}: revision {revision!r} is not a branch, tag or commit name "
                         "(letters, digits, '.', '_', '-', '/'; no '..')")
    if "/" in revision and not slashes:
        raise ValueError(f"{field}: {value!r}: a revision with '/' is ambiguous before a file path; use the commit sha")


def _check_repo_id(repo_id: str, field: str, value: str) -> None:
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise ValueError(f"{field}: {value!r}: {repo_id!r} is not a Hub repo id <org>/<name> (letters, digits, '.', "
                         "'_', '-'; at most 96 each; no '--' or '..')")


def parse_hub_model(value: str, field: str) -> HubRef:
    """hf://<org>/<name>[@<revision>]; ValueError naming `field` otherwise."""
    rest = value[len(HF_SCHEME):]
    repo_id, at, revision = rest.partition("@")
    if at:
        _check_revision(revision, field, value, slashes=True)
    elif rest.count("/") != 1:
        raise ValueError(f"{field}: {value!r}: expected hf://<org>/<name>[@<revision>] (a model repo; a file in a "
                         "repo is for datasets)")
    _check_repo_id(repo_id, field, value)
    return HubRef(repo_id, revision or None)


def parse_hub_file(value: str, field: str) -> HubRef:
    """hf://<org>/<name>[@<revision>]/<path in a dataset repo>; ValueError naming `field` otherwise."""
    parts = value[len(HF_SCHEME):].split("/", 2)
    if len(parts) < 3 or not parts[2] or parts[2].endswith("/"):
        raise ValueError(f"{field}: {value!r}: expected hf://<org>/<name>[@<revision>]/<file> (a file in a dataset repo)")
    org, name, path = parts
    name, at, revision = name.partition("@")
    if at:
        _check_revision(revision, field, value, slashes=False)
        if revision == "refs":  # refs/pr/<n> split at its first '/'
            raise ValueError(f"{field}: {value!r}: a revision with '/' is ambiguous before a file path; use the commit sha")
    _check_repo_id(f"{org}/{name}", field, value)
    if any(piece in ("", ".", "..") for piece in path.split("/")):
        raise ValueError(f"{field}: {value!r}: the file path {path!r} has an empty, '.' or '..' component")
    return HubRef(f"{org}/{name}", revision or None, path)


def parse_object(value: str, field: str, need_key: bool = False) -> ObjectRef:
    """s3://<bucket>[/<key>] (gs://, az://); ValueError naming `field` otherwise."""
    scheme = uri_scheme(value)
    if scheme not in OBJECT_STORE_SCHEMES:
        raise ValueError(f"{field}: {value!r}: expected an s3://, gs:// or az:// URI")
    bucket, _, key = value[len(scheme) + 3:].partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{field}: {value!r}: {bucket!r} is not a bucket (or container) name")
    key = key.strip("/")
    if need_key and not key:
        raise ValueError(f"{field}: {value!r}: name a key (a prefix) inside the bucket, not the bucket itself")
    if any(piece in ("", ".", "..") for piece in key.split("/")) and key:
        raise ValueError(f"{field}: {value!r}: the key {key!r} has an empty, '.' or '..' component")
    return ObjectRef(scheme, bucket, key)


MODEL_SCHEMES = ("pkg", "hf", *OBJECT_STORE_SCHEMES)


def check_model_uri(value: str, field: str) -> str:
    """A model's path: a plain path, pkg://, hf://<org>/<name>[@rev], or an object-store URI."""
    scheme = uri_scheme(value)
    if scheme is None or scheme == "pkg":
        return value
    if scheme == "hf":
        parse_hub_model(value, field)
    elif scheme in OBJECT_STORE_SCHEMES:
        parse_object(value, field)
    else:
        raise ValueError(f"{field}: {value!r}: {scheme}:// is not a model source; use a path, "
                         f"{', '.join(s + '://' for s in MODEL_SCHEMES)}")
    return value


def check_data_uri(value: Optional[str], field: str) -> Optional[str]:
    """A data file's path: hf:// and object-store URIs must have their shape (other URIs and
    paths are the readers' to judge)."""
    if value is None:
        return value
    scheme = uri_scheme(value)
    if scheme == "hf":
        parse_hub_file(value, field)
    elif scheme in OBJECT_STORE_SCHEMES:
        parse_object(value, field, need_key=True)
    return value


def check_output_uri(value: Optional[str], field: str = "output.uri") -> Optional[str]:
    """output.uri: an object-store prefix, never a bucket's root (it must not exist yet)."""
    if value is not None:
        parse_object(value, field, need_key=True)
    return value
