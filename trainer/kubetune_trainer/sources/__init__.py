"""Models and data named by URI, made local in the pod's check phase.

    hf://<org>/<name>[@rev]            model repo  -> a snapshot in the Hub cache (sources.hub)
    hf://<org>/<name>[@rev]/<file>     dataset file -> that file in the Hub cache
    s3://, gs://, az:// model          -> downloaded into the pod's cache (sources.objects)
    s3://, gs://, az:// data           -> checked and its ETag noted; the readers stream it

Each URI is resolved once per process (the check phase first, with progress; whoever asks
later, such as model_location or the readers, gets the same answer), and what was learned
(commit, cache hit, ETags) waits here for the lineage. Light to import: huggingface_hub and
fsspec load only when a URI needs them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kubetune_api.reports import ObjectVersion
from kubetune_api.sources import is_hub, is_object_store, parse_hub_file, parse_hub_model, uri_scheme
from kubetune_trainer.sources import hub, objects
from kubetune_trainer.sources.progress import ProgressSink
from kubetune_trainer.sources.hub import stay_offline  # noqa: F401 - the CLIs' switch once sources are local


@dataclass(frozen=True)
class Fetched:
    uri: str
    local: Optional[Path]  # None: read in place (object-store data)
    revision: Optional[str] = None  # hf://: as the spec names it (main by default)
    commit: Optional[str] = None  # hf://: the commit sha it resolved to
    cache_hit: Optional[bool] = None  # hf://: no download was needed
    objects: tuple[ObjectVersion, ...] = ()  # object stores: ETags (of a model's objects, or of the file)


_FETCHED: dict[tuple[str, str], Fetched] = {}


def is_remote_source(uri: str) -> bool:
    """A URI this package resolves (hf://, s3://, gs://, az://)."""
    return is_hub(uri) or is_object_store(uri)


def fetch_model(uri: str, field: str = "model.path", sink: Optional[ProgressSink] = None) -> Fetched:
    """The local copy of a model URI (a snapshot directory, a checkpoint directory or a .gguf file)."""
    key = ("model", uri)
    if key not in _FETCHED:
        if is_hub(uri):
            ref = parse_hub_model(uri, field)
            got = hub.resolve_model(ref, uri, field, sink)
            _FETCHED[key] = Fetched(uri, got.local, ref.revision_or_main, got.commit, got.cache_hit)
        else:
            got = objects.fetch_model(uri, field, sink)
            _FETCHED[key] = Fetched(uri, got.local, objects=got.objects)
    return _FETCHED[key]


def fetch_data(uri: str, field: str = "dataset.path", sink: Optional[ProgressSink] = None) -> Fetched:
    """A data URI: hf:// files are fetched into the Hub cache; object-store files checked in place."""
    key = ("data", uri)
    if key not in _FETCHED:
        if is_hub(uri):
            ref = parse_hub_file(uri, field)
            got = hub.resolve_file(ref, uri, field, sink)
            _FETCHED[key] = Fetched(uri, got.local, ref.revision_or_main, got.commit, got.cache_hit)
        else:
            version = objects.stat(uri, field)
            _FETCHED[key] = Fetched(uri, None, objects=(version,) if version else ())
    return _FETCHED[key]


def fetched(uri: str, kind: str) -> Optional[Fetched]:
    """What resolving `uri` (kind 'model' or 'data') learned, if it was resolved."""
    return _FETCHED.get((kind, uri))


def local_data_path(uri: str) -> Optional[Path]:
    """Where an hf:// data file lies locally (fetching it if no one did); None for other URIs."""
    if uri_scheme(uri) != "hf":
        return None
    return fetch_data(uri).local


def forget() -> None:
    """Drops what was resolved (tests resolve the same URI against different caches)."""
    _FETCHED.clear()
