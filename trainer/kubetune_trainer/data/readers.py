"""Reading raw rows from files and URIs: JSONL, CSV, Parquet or a saved Hugging Face dataset.

A path is a local (or PVC) path, a file:// or http(s):// URL, an object-store URI (s3://,
gs://, az://, ...) read through fsspec, or hf://<org>/<name>[@rev]/<file>, a file of a Hub
dataset repo that kubetune_trainer.sources fetches into the Hub cache and which is read there. Light at import: fsspec, pyarrow and datasets are
imported inside the functions that need them (the pod's CPU-only check phase reads
through this module before anything heavy loads).

Every reader yields (number, values) pairs: `number` is the 1-based line for JSONL and CSV
(what an editor shows) and the 1-based row for Parquet and HF datasets; `unit(format)` says
which, so error messages read "data.csv line 7" or "data.parquet row 7".
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from kubetune_api.errors import DataError

FORMATS = ("jsonl", "csv", "parquet", "hf")
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zstd", ".lz4")
# The fsspec plugin each URI scheme needs, for a clear message when the image lacks it.
_PLUGINS = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs",
            "adl": "adlfs", "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub", "oci": "ocifs"}
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def scheme(path: str) -> str | None:
    """The URI scheme ('s3', 'https', 'file'), or None for a plain path."""
    match = _URI.match(str(path))
    return match.group(1).lower() if match else None


def is_remote(path: str) -> bool:
    """Read through the network (hf:// files are fetched into the Hub cache first: local)."""
    return scheme(path) not in (None, "file", "hf")


def _local(path: str) -> Path | None:
    s = scheme(path)
    if s is None:
        return Path(path)
    if s == "file":
        return Path(urlparse(str(path)).path)
    if s == "hf":  # a file of a Hub dataset repo, in the Hub cache (kubetune_trainer.sources)
        from kubetune_trainer.sources import local_data_path

        return local_data_path(str(path))
    return None


def _filesystem(path: str):
    """(fsspec filesystem, path inside it); a missing plugin becomes a DataError naming the package."""
    import fsspec

    if scheme(path) == "hf":
        path = str(_local(path))
    try:
        return fsspec.core.url_to_fs(str(path))
    except ImportError as e:
        s = scheme(path)
        package = _PLUGINS.get(s, "the fsspec plugin for it")
        raise DataError(
            f"{path}: reading {s}:// URIs needs the Python package {package} (pip install {package}), "
            f"which is not installed in the trainer image ({e})"
        ) from None
    except ValueError as e:  # an unknown protocol
        raise DataError(f"{path}: cannot read this URI: {e}") from None


def resolve_format(path: str, fmt: str = "auto") -> str:
    """The concrete format: the given one, or by extension (a directory is a saved HF dataset)."""
    fmt = getattr(fmt, "value", fmt)
    if fmt != "auto":
        return fmt
    name = urlparse(str(path)).path if scheme(path) else str(path)
    lower = name.lower()
    for compression in _COMPRESSIONS:
        if lower.endswith(compression):
            lower = lower[: -len(compression)]
            break
    suffix = Path(lower).suffix
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    local = _local(path)
    if lower.endswith("/") or (local is not None and local.is_dir()):
        return "hf"
    if local is None:
        fs, inner = _filesystem(path)
        try:
            if fs.isdir(inner):
                return "hf"
        except Exception:  # noqa: BLE001 - e.g. HTTP servers without listings; fall through to the message
            pass
    raise DataError(
        f"{path}: cannot tell the format from the name; set format to one of {', '.join(FORMATS)} "
        "(auto knows .jsonl/.json/.ndjson, .csv, .parquet/.pq and directories saved by datasets' save_to_disk)"
    )


def unit(fmt: str) -> str:
    return "line" if fmt in ("jsonl", "csv") else "row"


def _not_found(path: str) -> DataError:
    local = _local(path)
    if local is not None:
        return DataError(f"{path}: dataset file not found (resolved to {local.resolve()})")
    return DataError(f"{path}: not found")


def _open(path: str, mode: str = "rb", compression: str | None = "infer", **kwargs):
    """An open file object for a local path or URI (compression inferred from the name, or none)."""
    local = _local(path)
    if local is not None and local.is_dir():
        raise DataError(f"{path}: is a directory; for a dataset saved by save_to_disk set format: hf")
    if local is None:
        _filesystem(path)  # a missing plugin gives its own message
    try:
        if local is not None and (compression is None or not str(local).lower().endswith(_COMPRESSIONS)):
            return open(local, mode, **kwargs)  # plain local files need no fsspec
        import fsspec

        return fsspec.open(str(path), mode, compression=compression, **kwargs).open()
    except FileNotFoundError:
        raise _not_found(path) from None
    except DataError:
        raise
    except OSError as e:
        raise DataError(f"{path}: cannot read dataset file: {e.strerror or e}") from e
    except Exception as e:  # noqa: BLE001 - network and service errors from fsspec plugins
        raise DataError(f"{path}: cannot read: {type(e).__name__}: {e}") from e


def open_raw(path: str):
    """The file's bytes as stored, not decompressed (what sha256sum reads), local or remote."""
    return _open(path, "rb", compression=None)


def filesystem(path: str):
    """(fsspec filesystem, path inside it) for a local path or URI; DataError for a missing plugin."""
    return _filesystem(path)


def _reading(path: str, read: Iterator) -> Iterator:
    """Re-raises errors while reading (network, decoding) as DataErrors naming the file."""
    try:
        yield from read
    except DataError:
        raise
    except FileNotFoundError:
        raise _not_found(path) from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text: {e}") from e
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot read: {type(e).__name__}: {e}") from e


def chunks(path: str, f, size: int) -> Iterator[bytes]:
    """`f`'s bytes in pieces of `size`; read errors become DataErrors naming `path`."""
    return _reading(path, iter(lambda: f.read(size), b""))


def jsonl_lines(path: str) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a JSONL file with their 1-based numbers (parsing is the caller's)."""

    def read():
        with _open(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line

    return _reading(path, read())


def parse_jsonl(path: str, number: int, line: str) -> dict:
    import json

    try:
        values = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {number}: invalid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(values, dict):
        raise DataError(f"{path} line {number}: expected a JSON object, got {type(values).__name__}")
    return values


def _csv_records(path: str) -> Iterator[tuple[int, dict]]:
    import csv

    with _open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            return
        width = len(reader.fieldnames)
        for values in reader:
            if None in values:  # more cells than header names
                raise DataError(f"{path} line {reader.line_num}: {width + len(values[None])} cells but the header names {width} columns")
            if not any(v for v in values.values()):
                continue  # a blank line
            # Short rows: cells past the end have no value (None), reported as such by the template check.
            yield reader.line_num, values


def _parquet_records(path: str) -> Iterator[tuple[int, dict]]:
    import pyarrow.parquet as pq

    with _open(path, "rb") as f:
        try:
            table = pq.ParquetFile(f)
        except Exception as e:  # noqa: BLE001 - pyarrow's ArrowInvalid and friends
            raise DataError(f"{path}: not a Parquet file: {e}") from e
        number = 0
        for batch in table.iter_batches(batch_size=1024):
            for values in batch.to_pylist():
                number += 1
                yield number, values


def load_hf(path: str):
    """A dataset saved with save_to_disk: a Dataset, or the 'train' split (or only split) of a DatasetDict."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{path}: format hf needs the Python package datasets (pip install datasets)") from None
    local = _local(path)
    if local is not None and not local.exists():
        raise _not_found(path)
    if local is None:
        _filesystem(path)
    try:
        loaded = datasets.load_from_disk(str(local) if local is not None else str(path))
    except FileNotFoundError as e:
        raise DataError(f"{path}: not a dataset saved by save_to_disk: {e}") from None
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: cannot load the saved dataset: {type(e).__name__}: {e}") from e
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        if "train" in loaded:
            return loaded["train"]
        if len(names) == 1:
            return loaded[names[0]]
        raise DataError(f"{path}: a DatasetDict with splits {', '.join(names)} and no 'train'; save the split to use on its own")
    return loaded


def _hf_records(path: str) -> Iterator[tuple[int, dict]]:
    dataset = load_hf(path)
    for number, values in enumerate(dataset, start=1):
        yield number, dict(values)


def records(path: str, fmt: str = "auto", limit: int | None = None) -> Iterator[tuple[int, dict]]:
    """(number, values) for each row, in file order; at most `limit` rows when given."""
    fmt = resolve_format(path, fmt)
    if fmt == "jsonl":
        read = ((number, parse_jsonl(path, number, line)) for number, line in jsonl_lines(path))
    elif fmt == "csv":
        read = _reading(path, _csv_records(path))
    elif fmt == "parquet":
        read = _reading(path, _parquet_records(path))
    elif fmt == "hf":
        read = _reading(path, _hf_records(path))
    else:
        raise DataError(f"{path}: unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    yield from itertools.islice(read, limit)


def row_count(path: str, fmt: str) -> int | None:
    """The number of rows when the format stores it (Parquet metadata, a saved dataset); else None."""
    fmt = resolve_format(path, fmt)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        with _open(path, "rb") as f:
            try:
                return pq.ParquetFile(f).metadata.num_rows
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{path}: not a Parquet file: {e}") from e
    if fmt == "hf":
        return len(load_hf(path))
    return None
