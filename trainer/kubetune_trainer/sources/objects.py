"""s3://, gs://, az:// sources and output.uri, through fsspec (s3fs, gcsfs, adlfs).

Credentials are the store's own environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_ENDPOINT_URL; GOOGLE_APPLICATION_CREDENTIALS; AZURE_STORAGE_*), from the runtime's env or
the workload identity, never from the spec. A model (a checkpoint prefix or a .gguf object)
is downloaded into the pod's cache under a key made of its objects' ETags, so a changed object
is fetched again and an unchanged one never twice. Failures become the SourceError of their
reason (missing bucket or key, refused credentials, store unreachable), naming URI and field.
"""
from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kubetune_api.errors import (ConfigError, SourceError, SourceNotFoundError, SourceUnauthorizedError,
                                 SourceUnavailableError)
from kubetune_api.reports import MAX_OBJECTS, ObjectVersion
from kubetune_api.sources import OBJECT_STORE_PACKAGES, ObjectRef, parse_object
from kubetune_trainer.sources.progress import Meter, ProgressSink

log = logging.getLogger(__name__)

# The stores' clients retry and wait on their own; these bound both, so an unreachable store
# fails in about a minute instead of hanging.
_OPTIONS = {"s3": {"config_kwargs": {"connect_timeout": 10, "read_timeout": 60,
                                     "retries": {"max_attempts": 3, "mode": "standard"}}}}
_UNAUTHORIZED_NAMES = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                       "DefaultCredentialsError", "ClientAuthenticationError")


@dataclass(frozen=True)
class ObjectSource:
    local: Optional[Path]  # the downloaded model (None for data, which is read in place)
    objects: tuple[ObjectVersion, ...]


def _store(ref: ObjectRef, uri: str, field: str):
    """A fresh filesystem for the scheme (fsspec's instance cache would keep old credentials)."""
    import fsspec

    try:
        return fsspec.filesystem(ref.scheme, skip_instance_cache=True, **_OPTIONS.get(ref.scheme, {}))
    except ImportError:
        package = OBJECT_STORE_PACKAGES[ref.scheme]
        raise SourceUnavailableError(f"{field} {uri!r}: {ref.scheme}:// needs the Python package {package} "
                                     f"(pip install {package}), which is not installed in the trainer image") from None


def classify(error: BaseException, uri: str, field: str, bucket: str) -> SourceError:
    """The SourceError for a store's failure (fsspec plugins raise OSError kinds, clients their own)."""
    where = f"{field} {uri!r}"
    if isinstance(error, SourceError):
        return error
    if isinstance(error, FileNotFoundError):
        return SourceNotFoundError(f"{where}: nothing at this key in bucket {bucket!r}")
    if isinstance(error, PermissionError) or type(error).__name__ in _UNAUTHORIZED_NAMES:
        return SourceUnauthorizedError(
            f"{where}: the store refused the credentials (from the runtime's env, e.g. AWS_ACCESS_KEY_ID and "
            f"AWS_SECRET_ACCESS_KEY, or the workload identity): {type(error).__name__}: {error}")
    return SourceUnavailableError(f"{where}: cannot reach the store: {type(error).__name__}: {error}")


def _version(key: str, info: dict) -> ObjectVersion:
    etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or "").strip('"')
    version = info.get("VersionId") or info.get("generation") or info.get("version_id")
    return ObjectVersion(key=key, etag=etag[:256], version_id=str(version)[:256] if version else None)


def _check_bucket(fs, ref: ObjectRef, uri: str, field: str) -> None:
    """The bucket exists and the credentials may use it (a plain "not found" for the key would hide which)."""
    try:
        try:
            fs.info(ref.bucket)
        except FileNotFoundError:  # older s3fs: also an existing bucket that is empty
            fs.ls(ref.bucket, detail=False)  # which lists as empty; a missing one raises again
    except FileNotFoundError:
        raise SourceNotFoundError(f"{field} {uri!r}: no bucket (or container) {ref.bucket!r}") from None
    except Exception as e:  # noqa: BLE001 - every failure becomes its reason
        raise classify(e, uri, field, ref.bucket) from None


def _info(fs, ref: ObjectRef, uri: str, field: str) -> dict:
    _check_bucket(fs, ref, uri, field)
    try:
        return fs.info(f"{ref.bucket}/{ref.key}" if ref.key else ref.bucket)
    except Exception as e:  # noqa: BLE001 - every failure becomes its reason
        raise classify(e, uri, field, ref.bucket) from None


def stat(uri: str, field: str) -> Optional[ObjectVersion]:
    """A data file's ETag (and version); None for a prefix (a saved dataset, whose files the
    lineage digests). Fails with its reason when it cannot be read."""
    ref = parse_object(uri, field)
    info = _info(_store(ref, uri, field), ref, uri, field)
    return None if info.get("type") == "directory" else _version("", info)


def _cache_root() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", "~/.cache/kubetune")).expanduser() / "objects"


def _listing(fs, ref: ObjectRef, info: dict, uri: str, field: str) -> dict[str, dict]:
    """Relative key -> info of every object the model is made of."""
    root = f"{ref.bucket}/{ref.key}".rstrip("/")
    if info.get("type") != "directory":
        return {posixpath.basename(root): info}
    try:
        found = fs.find(root, detail=True)
    except Exception as e:  # noqa: BLE001
        raise classify(e, uri, field, ref.bucket) from None
    listing = {posixpath.relpath(name, root): entry for name, entry in found.items() if entry.get("type") != "directory"}
    if not listing:
        raise SourceNotFoundError(f"{field} {uri!r}: the prefix holds no objects")
    return listing


def _callback(meter: Meter):
    from fsspec.callbacks import Callback

    class ToMeter(Callback):
        def relative_update(self, inc=1):
            meter.add(int(inc or 0))
            super().relative_update(inc)

    return ToMeter()


def fetch_model(uri: str, field: str, sink: Optional[ProgressSink] = None) -> ObjectSource:
    """Downloads the model at `uri` (a .gguf object, or every object under a prefix) into the
    pod's cache, unless an identical copy (same keys and ETags) is there already."""
    ref = parse_object(uri, field)
    fs = _store(ref, uri, field)
    info = _info(fs, ref, uri, field)
    listing = _listing(fs, ref, info, uri, field)
    versions = tuple(_version(key, listing[key]) for key in sorted(listing))
    key = hashlib.sha256("".join(f"{v.key}\t{v.etag}\t{v.version_id}\n" for v in versions).encode()).hexdigest()[:16]
    name = posixpath.basename(ref.key) or ref.bucket
    target = _cache_root() / f"{ref.scheme}-{ref.bucket}-{key}" / name
    if target.exists():
        log.info("%s: using the copy in %s (same ETags)", uri, target)
        return ObjectSource(target, versions[:MAX_OBJECTS])
    meter = Meter(uri, sink, total=sum(int(entry.get("size") or 0) for entry in listing.values()))
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        directory = info.get("type") == "directory"
        root = f"{ref.bucket}/{ref.key}".rstrip("/")
        for relative in sorted(listing):
            local = staging / name / relative if directory else staging / name
            local.parent.mkdir(parents=True, exist_ok=True)
            remote = f"{root}/{relative}" if directory else root
            try:
                fs.get_file(remote, str(local), callback=_callback(meter))
            except Exception as e:  # noqa: BLE001
                raise classify(e, uri, field, ref.bucket) from None
        try:
            (staging / name).rename(target)
        except OSError:
            if not target.exists():  # not a concurrent rank that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    meter.finish()
    return ObjectSource(target, versions[:MAX_OBJECTS])


def check_destination(uri: str, field: str = "output.uri") -> None:
    """The bucket exists and nothing is at the prefix yet (an upload never overwrites)."""
    ref = parse_object(uri, field, need_key=True)
    fs = _store(ref, uri, field)
    _check_bucket(fs, ref, uri, field)
    try:
        taken = fs.exists(f"{ref.bucket}/{ref.key}")
    except Exception as e:  # noqa: BLE001
        raise classify(e, uri, field, ref.bucket) from None
    if taken:
        raise ConfigError(f"{field} {uri!r} exists; kubetune never overwrites an upload (choose a new prefix)")


def upload(directory: Path, uri: str, names: list[str], sink: Optional[ProgressSink] = None,
           field: str = "output.uri") -> list[str]:
    """Uploads `names` (files and directories under `directory`) to the prefix `uri`, which must
    not exist; on a failure whatever was uploaded is removed again. Returns the keys written."""
    check_destination(uri, field)
    ref = parse_object(uri, field, need_key=True)
    fs = _store(ref, uri, field)
    files = sorted(p for name in names for p in ([directory / name] if (directory / name).is_file()
                                                 else (directory / name).rglob("*")) if p.is_file())
    meter = Meter(uri, sink, total=sum(p.stat().st_size for p in files))
    root = f"{ref.bucket}/{ref.key}"
    written = []
    try:
        for path in files:
            relative = path.relative_to(directory).as_posix()
            fs.put_file(str(path), f"{root}/{relative}", callback=_callback(meter))
            written.append(relative)
    except Exception as e:  # noqa: BLE001
        try:
            if fs.exists(root):
                fs.rm(root, recursive=True)
        except Exception:  # noqa: BLE001 - the first error is the one to report
            log.warning("could not remove the partial upload at %s", uri)
        raise classify(e, uri, field, ref.bucket) from None
    meter.finish()
    return written
