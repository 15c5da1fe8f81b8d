"""Lineage: what a run was made of, by content. Every data file's sha256 and row count, the
model's digest (of its file, or of a directory's manifest), a hash of the resolved config and
the library versions; the operator adds the image. Same lineage and seed, same loss curve.

Light at import (no torch): it runs right after the check phase, before any model loads.
Remote sources add what resolving them learned (kubetune_trainer.sources): the commit an hf://
revision resolved to and whether the cache held it, the ETags of object-store files.
Files are hashed as stored (compressed files are not decompressed, so a file's sha256 is what
`sha256sum` prints), streaming in 1 MiB pieces, local or remote through readers' opener.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

from pydantic import BaseModel

from kubetune_api.evaluation import EvalConfig
from kubetune_api.reports import DatasetLineage, Lineage, ModelLineage
from kubetune_api.training import TrainingConfig
from kubetune_trainer import sources
from kubetune_trainer.data.rows import retention_source, task_sources
from kubetune_trainer.model.location import resolve_path
from kubetune_trainer.data.readers import chunks, filesystem, open_raw, records, resolve_format, row_count

CHUNK = 1 << 20  # 1 MiB


@dataclass(frozen=True)
class Digest:
    sha256: str  # hex
    files: int
    bytes: int


def _hash_file(path: str, fs=None, inner: str | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of one file's bytes, read in CHUNK pieces."""
    h, size = hashlib.sha256(), 0
    with (fs.open(inner, "rb") if fs is not None else open_raw(path)) as f:
        for piece in chunks(path, f, CHUNK):
            h.update(piece)
            size += len(piece)
    return h.hexdigest(), size


def manifest(entries: dict[str, str]) -> str:
    """The manifest of a directory: 'relative/path<TAB>sha256\\n' per file, sorted by path."""
    return "".join(f"{name}\t{entries[name]}\n" for name in sorted(entries))


def digest(path: str) -> Digest:
    """A file's sha256, or a directory's: the sha256 of its manifest (every file below it)."""
    fs, inner = filesystem(path)
    if not fs.isdir(inner):
        sha, size = _hash_file(path)
        return Digest(sha, 1, size)
    entries, total = {}, 0
    for name in fs.find(inner):
        sha, size = _hash_file(f"{path}/{posixpath.relpath(name, inner)}", fs, name)
        entries[posixpath.relpath(name, inner)] = sha
        total += size
    return Digest(hashlib.sha256(manifest(entries).encode()).hexdigest(), len(entries), total)


def config_hash(config: BaseModel) -> str:
    """sha256:<hex> of the resolved config as canonical JSON (sorted keys, defaults filled in).
    output.path and tracking are left out: where the results go does not change them."""
    values = config.model_dump(by_alias=True, mode="json", exclude={"output", "tracking"})
    text = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _rows(path: str, fmt, limit: int | None) -> int:
    """Rows read from the file (at most `limit`): from metadata where the format keeps it."""
    fmt = resolve_format(path, fmt)
    n = row_count(path, fmt)
    if n is None:
        n = sum(1 for _ in records(path, fmt, limit))
    return n if limit is None else min(n, limit)


def _source_fields(got) -> dict:
    """What resolving a remote source learned: hf:// commit and cache hit, object ETags."""
    if got is None:
        return {}
    return {"commit": got.commit, "cache_hit": got.cache_hit}


def dataset_lineage(role: str, path: str, fmt="auto", limit: int | None = None, rows: int | None = None) -> DatasetLineage:
    """One data file's entry; `rows` when the caller has counted them already."""
    d = digest(path)
    got = sources.fetched(path, "data")
    extra = _source_fields(got)
    if got is not None and got.objects:
        extra.update(etag=got.objects[0].etag, version_id=got.objects[0].version_id)
    return DatasetLineage(role=role, uri=path, sha256=d.sha256, bytes=d.bytes,
                          rows=_rows(path, fmt, limit) if rows is None else rows, **extra)


def model_lineage(path: str, field: str = "model.path", name: str | None = None, role: str = "base") -> ModelLineage:
    """A model's (or adapter's) entry; pkg:// and remote paths are digested where they resolve to."""
    d = digest(str(resolve_path(path, field)))
    got = sources.fetched(path, "model")
    extra = _source_fields(got)
    if got is not None:
        extra.update(revision=got.revision, objects=list(got.objects) or None)
    return ModelLineage(name=name, role=role, uri=path, digest=f"sha256:{d.sha256}", files=d.files, **extra)


def _training_files(config: TrainingConfig) -> list[tuple[str, str, object, int | None]]:
    """(role, path, format, limit) of every file a training config reads."""
    files = []
    for source in task_sources(config.dataset):
        prefix = "train" if source.name is None else f"task:{source.name}"
        files.append((prefix, source.spec.path, source.spec.format, None))
        for split, path in (("validation", source.validation_path), ("test", source.test_path)):
            if path:
                role = split if source.name is None else f"{prefix}/{split}"
                files.append((role, path, source.spec.format, None))
    retention = retention_source(config.dataset)
    if retention is not None:
        files.append(("retention", retention.spec.path, retention.spec.format, retention.max_examples))
    return files


def _versions(versions: dict[str, str | None]) -> dict[str, str]:
    return {name: version for name, version in versions.items() if version}


def training_lineage(config: TrainingConfig, versions: dict[str, str | None]) -> Lineage:
    """The lineage of a training run: its data files, base model, config and versions."""
    return Lineage(
        datasets=[dataset_lineage(*entry) for entry in _training_files(config)],
        model=model_lineage(config.model.path),
        config_hash=config_hash(config),
        versions=_versions(versions),
    )


def _evaluation_files(config: EvalConfig, rows: dict) -> list[DatasetLineage]:
    """Each task's rows file (eval, or task:<name> in a suite) and its few-shot file."""
    files = []
    for name, part in config.task_configs():
        if part.dataset is None:  # task lm-eval: its data is lm-eval's (versions record lm-eval's)
            continue
        role = "eval" if name is None else f"task:{name}"
        files.append(dataset_lineage(role, part.dataset.path, rows=rows.get(name)))
        if part.dataset.few_shot is not None:
            shots = "few-shot" if name is None else f"{role}/few-shot"
            files.append(dataset_lineage(shots, part.dataset.few_shot.path))
    return files


def evaluation_lineage(config: EvalConfig, versions: dict[str, str | None], rows: dict | None = None) -> Lineage:
    """The lineage of an evaluation: its data, every model and adapter, config and versions.
    `rows`: rows already read, by suite task name (None for the single dataset)."""
    models = []
    for spec in config.models:
        models.append(model_lineage(spec.path, f"models[{spec.name}].path", spec.name))
        if spec.adapter:
            models.append(model_lineage(spec.adapter, f"models[{spec.name}].adapter", spec.name, "adapter"))
    return Lineage(
        datasets=_evaluation_files(config, rows or {}),
        models=models,
        config_hash=config_hash(config),
        versions=_versions(versions),
    )
