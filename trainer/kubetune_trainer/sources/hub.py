"""hf:// sources: a model repo (a snapshot) or a file of a dataset repo, resolved by
huggingface_hub into the Hugging Face Hub cache.

The cache is $KUBETUNE_MODEL_CACHE (a runtime's shared volume) or the pod's own
($HF_HOME/hub). huggingface_hub's layout keys it by commit (snapshots/<sha>, refs/<branch>) and
its file locks (.locks/) make two pods on one volume download a blob once. A revision whose
snapshot the cache holds completely is used offline (local_files_only: no request at all, a
cache hit); otherwise it is downloaded from $HF_ENDPOINT (a mirror, or the Hub) with $HF_TOKEN,
unless HF_HUB_OFFLINE is set. Errors become the SourceError of their reason, naming the URI
and the field.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kubetune_api.errors import (RevisionNotFoundError, SourceError, SourceNotFoundError, SourceUnauthorizedError,
                                 SourceUnavailableError)
from kubetune_api.sources import HubRef
from kubetune_api.wire import ENV_HUB_ENDPOINT, ENV_HUB_TOKEN, ENV_MODEL_CACHE
from kubetune_trainer.sources.progress import Meter, ProgressSink, meter_tqdm

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
# Every Hub request gets these (huggingface_hub's own client waits forever on API calls).
CONNECT_TIMEOUT, READ_TIMEOUT = 10.0, 60.0
_TRUE = {"1", "ON", "YES", "TRUE"}


@dataclass(frozen=True)
class HubSource:
    local: Path  # the snapshot directory, or the file in it
    commit: str
    cache_hit: bool


def cache_dir() -> str:
    """The Hub cache this pod uses: the runtime's shared one, else its own."""
    shared = os.environ.get(ENV_MODEL_CACHE)
    if shared:
        return shared
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return os.path.join(os.environ.get("HF_HOME") or "~/.cache/huggingface", "hub")


def offline_requested() -> bool:
    """HF_HUB_OFFLINE in the pod's environment: the cache only, no request."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in _TRUE


def _endpoint() -> str:
    return (os.environ.get(ENV_HUB_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")


def _token() -> Optional[str]:
    return os.environ.get(ENV_HUB_TOKEN) or None


def _with_timeouts():
    """huggingface_hub's default client, plus a timeout on every request that has none."""
    import httpx2
    from huggingface_hub.utils._http import default_client_factory

    client = default_client_factory()
    bounded = httpx2.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT).as_dict()

    def bound(request):
        if not any((request.extensions.get("timeout") or {}).values()):
            request.extensions["timeout"] = bounded

    client.event_hooks["request"].append(bound)
    return client


_client_set = False


@contextmanager
def _online():
    """Lets huggingface_hub send requests for the duration (it reads HF_HUB_OFFLINE once, at
    import; kubetune turns it on itself once every source is local, see stay_offline)."""
    global _client_set
    import huggingface_hub
    from huggingface_hub import constants

    if not _client_set:
        huggingface_hub.set_client_factory(_with_timeouts)
        _client_set = True
    previous, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def stay_offline() -> None:
    """From here on nothing in this process reaches the Hub (transformers and datasets ask
    huggingface_hub whether they may)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    constants.HF_HUB_OFFLINE = True


def _http_status(error: BaseException) -> Optional[int]:
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None)


def _chain(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def classify(error: BaseException, uri: str, field: str, revision: str, file: Optional[str] = None) -> SourceError:
    """The SourceError for a huggingface_hub failure while fetching `revision` (and `file`)."""
    from huggingface_hub import errors as hub

    where = f"{field} {uri!r}"
    for cause in _chain(error):
        if isinstance(cause, hub.LocalEntryNotFoundError):  # "not cached, and the Hub failed": see why
            continue
        status = _http_status(cause)
        if isinstance(cause, hub.RevisionNotFoundError):
            return RevisionNotFoundError(f"{where}: the repo has no revision {revision!r} (a branch, tag or commit)")
        if isinstance(cause, hub.GatedRepoError) or status in (401, 403):
            return SourceUnauthorizedError(
                f"{where}: the Hub answered {status or 'gated'}: the repo is gated or private and the token "
                f"(${ENV_HUB_TOKEN}, from the runtime's hub.tokenSecret) is missing or has no access; the Hub also "
                "answers 401 for a repo that does not exist when no token is sent")
        if isinstance(cause, hub.RemoteEntryNotFoundError) or (
                status == 404 and not isinstance(cause, hub.RepositoryNotFoundError)):
            return SourceNotFoundError(f"{where}: no file {file!r} in the repo at revision {revision!r}")
        if isinstance(cause, hub.RepositoryNotFoundError):
            return SourceNotFoundError(f"{where}: no such repo on {_endpoint()}")
        if isinstance(cause, hub.OfflineModeIsEnabled):
            break
        if isinstance(cause, PermissionError) and status is None:  # the volume, not the Hub
            return SourceUnavailableError(f"{where}: cannot write to the model cache {cache_dir()} "
                                          f"(uid {os.getuid()}): {cause}")
    return SourceUnavailableError(f"{where}: cannot reach {_endpoint()} and the cache ({cache_dir()}) does not hold "
                                  f"it completely: {type(error).__name__}: {error}")


def _offline_error(uri: str, field: str) -> SourceUnavailableError:
    return SourceUnavailableError(f"{field} {uri!r}: HF_HUB_OFFLINE is set and the model cache ({cache_dir()}) "
                                  "does not hold this revision completely")


def _commit_of(path: str) -> str:
    """The commit sha in a cache path (.../snapshots/<sha>[/file])."""
    parts = Path(path).parts
    return parts[parts.index("snapshots") + 1]


def resolve_model(ref: HubRef, uri: str, field: str, sink: Optional[ProgressSink] = None) -> HubSource:
    """The snapshot directory of a model repo at ref's revision: from the cache when it holds it
    completely, else downloaded."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    options = dict(repo_id=ref.repo_id, revision=ref.revision_or_main, cache_dir=cache_dir())
    try:
        path = snapshot_download(**options, local_files_only=True)
        log.info("%s: cache hit, commit %s in %s", uri, _commit_of(path), options["cache_dir"])
        return HubSource(Path(path), _commit_of(path), cache_hit=True)
    except (LocalEntryNotFoundError, IncompleteSnapshotError):
        pass
    if offline_requested():
        raise _offline_error(uri, field)
    meter = Meter(uri, sink)
    log.info("%s: not in the cache %s; downloading from %s", uri, options["cache_dir"], _endpoint())
    try:
        with _online():
            path = snapshot_download(**options, endpoint=_endpoint(), token=_token(), tqdm_class=meter_tqdm(meter))
    except Exception as e:  # noqa: BLE001 - every failure becomes its reason
        raise classify(e, uri, field, ref.revision_or_main) from None
    meter.finish()
    return HubSource(Path(path), _commit_of(path), cache_hit=False)


def resolve_file(ref: HubRef, uri: str, field: str, sink: Optional[ProgressSink] = None) -> HubSource:
    """One file of a dataset repo at ref's revision, from the cache or downloaded."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    options = dict(repo_id=ref.repo_id, filename=ref.path, repo_type="dataset", revision=ref.revision_or_main,
                   cache_dir=cache_dir())
    try:
        path = hf_hub_download(**options, local_files_only=True)
        return HubSource(Path(path), _commit_of(path), cache_hit=True)
    except LocalEntryNotFoundError:
        pass
    if offline_requested():
        raise _offline_error(uri, field)
    meter = Meter(uri, sink)
    try:
        with _online():
            path = hf_hub_download(**options, endpoint=_endpoint(), token=_token(), tqdm_class=meter_tqdm(meter))
    except Exception as e:  # noqa: BLE001
        raise classify(e, uri, field, ref.revision_or_main, ref.path) from None
    meter.finish()
    return HubSource(Path(path), _commit_of(path), cache_hit=False)
