"""Rows from JSONL, CSV, Parquet and saved HF datasets, from local paths, file:// and http:// URLs."""
from __future__ import annotations

import csv
import functools
import gzip
import http.server
import threading

import pytest

from kubetune_api.training import DatasetSpec
from kubetune_api.errors import DataError
from kubetune_trainer.data.rows import ExampleMaker, check_dataset, read_rows
from kubetune_trainer.data.readers import records, resolve_format
from tinymodels import TEMPLATE, make_rows, write_jsonl

ROWS = make_rows(12)


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_hf(path, rows, dict_splits=None):
    import datasets

    dataset = datasets.Dataset.from_list(rows)
    if dict_splits:
        datasets.DatasetDict({name: dataset for name in dict_splits}).save_to_disk(str(path))
    else:
        dataset.save_to_disk(str(path))
    return path


@pytest.fixture
def files(tmp_path):
    return {
        "jsonl": write_jsonl(tmp_path / "rows.jsonl", ROWS),
        "csv": write_csv(tmp_path / "rows.csv", ROWS),
        "parquet": write_parquet(tmp_path / "rows.parquet", ROWS),
        "hf": write_hf(tmp_path / "rows_hf", ROWS),
    }


def examples(path, fmt="auto"):
    spec = DatasetSpec(path=str(path), format=fmt, prompt_template=TEMPLATE, completion_field="answer")
    make = ExampleMaker(spec)
    return [(e.prompt, e.completion) for e in map(make, read_rows(str(path), fmt))]


@pytest.fixture(scope="module")
def http_root(tmp_path_factory):
    """A local HTTP server on 127.0.0.1 serving a temporary directory."""
    root = tmp_path_factory.mktemp("http")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_every_format_gives_the_same_examples(files):
    expected = examples(files["jsonl"])
    assert len(expected) == 12 and expected[0] == ("Which animal is red cat?\nAnswer:", " cat")
    for fmt, path in files.items():
        assert resolve_format(str(path)) == fmt
        assert examples(path) == expected, fmt
        assert examples(path, fmt) == expected, fmt


def test_auto_format_by_extension_and_compression(tmp_path):
    assert resolve_format("s3://bucket/x/data.parquet") == "parquet"
    assert resolve_format("https://host/d.csv?sig=abc") == "csv"
    assert resolve_format("d.ndjson") == "jsonl"
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(write_jsonl(tmp_path / "p.jsonl", ROWS).read_bytes()))
    assert resolve_format(str(path)) == "jsonl"
    assert examples(path) == examples(tmp_path / "p.jsonl")
    with pytest.raises(DataError, match=r"rows\.txt: cannot tell the format from the name; set format"):
        resolve_format(str(tmp_path / "rows.txt"))


def test_file_uri(files):
    for fmt, path in files.items():
        assert examples(f"file://{path}") == examples(path), fmt


def test_http_url(files, http_root):
    root, base = http_root
    for name in ("rows.jsonl", "rows.csv", "rows.parquet"):
        (root / name).write_bytes(files["jsonl"].with_name(name).read_bytes())
        assert examples(f"{base}/{name}") == examples(files["jsonl"]), name
    spec = DatasetSpec(path=f"{base}/rows.jsonl", prompt_template=TEMPLATE, completion_field="answer")
    assert check_dataset(spec) == 12


def test_http_missing_file_and_bad_row_are_named(http_root):
    root, base = http_root
    spec = DatasetSpec(path=f"{base}/nope.jsonl", prompt_template=TEMPLATE, completion_field="answer")
    with pytest.raises(DataError, match=r"/nope\.jsonl: not found"):
        check_dataset(spec)
    rows = make_rows(6)
    del rows[3]["animal"]
    write_jsonl(root / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"http://127\.0\.0\.1:\d+/bad\.jsonl line 4: field 'animal' used by dataset\.promptTemplate is missing"):
        check_dataset(spec.model_copy(update={"path": f"{base}/bad.jsonl"}))


def test_remote_preflight_reads_a_bounded_prefix(http_root):
    root, base = http_root
    path = write_jsonl(root / "big.jsonl", make_rows(30))
    path.write_text(path.read_text() + "not json\n")
    spec = DatasetSpec(path=f"{base}/big.jsonl", prompt_template=TEMPLATE, completion_field="answer")
    assert check_dataset(spec, max_rows_to_check=10) == 10  # the bad line 31 is never read
    with pytest.raises(DataError, match="line 31: invalid JSON"):
        check_dataset(spec, max_rows_to_check=100)


def test_object_store_without_its_plugin_names_the_package():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    spec = DatasetSpec(path="s3://bucket/rows.jsonl", prompt_template=TEMPLATE, completion_field="answer")
    with pytest.raises(DataError, match=r"s3://bucket/rows\.jsonl: reading s3:// URIs needs the Python package s3fs"):
        check_dataset(spec)


def test_errors_name_file_row_and_field_in_every_format(tmp_path):
    rows = make_rows(6)
    rows[4]["color"] = None
    paths = {
        "jsonl": (write_jsonl(tmp_path / "b.jsonl", rows), "line 5"),
        "parquet": (write_parquet(tmp_path / "b.parquet", rows), "row 5"),
        "hf": (write_hf(tmp_path / "b_hf", rows), "row 5"),
    }
    for fmt, (path, where) in paths.items():
        spec = DatasetSpec(path=str(path), prompt_template=TEMPLATE, completion_field="answer", format=fmt)
        with pytest.raises(DataError, match=rf"b(\.jsonl|\.parquet|_hf) {where}: field 'color' used by dataset\.promptTemplate has no value"):
            check_dataset(spec)
    # CSV: a column missing from the header, and a row with too many cells, by file line.
    no_color = [{k: v for k, v in r.items() if k != "color"} for r in make_rows(4)]
    spec = DatasetSpec(path=str(write_csv(tmp_path / "c.csv", no_color)), prompt_template=TEMPLATE, completion_field="answer")
    with pytest.raises(DataError, match=r"c\.csv line 2: field 'color' used by dataset\.promptTemplate is missing"):
        check_dataset(spec)
    path = write_csv(tmp_path / "d.csv", make_rows(4))
    path.write_text(path.read_text() + "red,cat, cat,extra\n")
    with pytest.raises(DataError, match=r"d\.csv line 6: 4 cells but the header names 3 columns"):
        check_dataset(spec.model_copy(update={"path": str(path)}))


def test_hf_dataset_dict_uses_train_or_refuses(tmp_path):
    path = write_hf(tmp_path / "dd", ROWS, dict_splits=["train", "validation"])
    assert len(examples(path)) == 12
    path = write_hf(tmp_path / "dd2", ROWS, dict_splits=["a", "b"])
    with pytest.raises(DataError, match=r"dd2: a DatasetDict with splits a, b and no 'train'"):
        read_rows(str(path))
    with pytest.raises(DataError, match=r"missing_hf: dataset file not found"):
        read_rows(str(tmp_path / "missing_hf"), "hf")


def test_parquet_preflight_counts_from_metadata(tmp_path):
    path = write_parquet(tmp_path / "many.parquet", make_rows(40))
    spec = DatasetSpec(path=str(path), prompt_template=TEMPLATE, completion_field="answer")
    assert check_dataset(spec, max_rows_to_check=5) == 40
    assert [n for n, _ in records(str(path), "parquet", limit=3)] == [1, 2, 3]
