"""s3:// sources and output.uri against moto's standalone S3 server with IAM authentication:
models downloaded and reused by ETag, data read in place with its ETag in the lineage, results
uploaded and read back, and each failure with its reason."""
from __future__ import annotations

import pytest
from sources_fixtures import MotoS3, read_files, s3_filesystems_forget

from kubetune_api.errors import ConfigError, Reason, SourceError
from kubetune_trainer.data import readers
from kubetune_trainer import sources
from kubetune_trainer.reporting.lineage import dataset_lineage, model_lineage
from kubetune_trainer.model.location import locate_model
from kubetune_trainer.sources import objects

ROWS = b'{"color": "red", "animal": "cat", "answer": " cat"}\n{"color": "blue", "animal": "dog", "answer": " dog"}\n'


@pytest.fixture(scope="session")
def s3_server():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, request):
    """The server's keys in the environment (as a runtime's Secret gives them) and a fresh bucket."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    client = s3_server.client()
    bucket = f"b-{abs(hash(request.node.name)) % 10**10}"
    client.create_bucket(Bucket=bucket)
    s3_filesystems_forget()
    sources.forget()
    yield client, bucket
    sources.forget()


def put_directory(client, bucket: str, prefix: str, files: dict[str, bytes]) -> dict[str, str]:
    """Uploads `files` under `prefix`; returns each key's ETag as S3 reports it."""
    for name, content in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=content)
    return {name: client.head_object(Bucket=bucket, Key=f"{prefix}/{name}")["ETag"].strip('"') for name in files}


def failure(call, *args) -> SourceError:
    with pytest.raises(SourceError) as caught:
        call(*args)
    return caught.value


def test_a_model_prefix_is_downloaded_once_by_etag_and_is_a_checkpoint(s3, tiny_model_dir):
    client, bucket = s3
    files = read_files(tiny_model_dir)
    etags = put_directory(client, bucket, "models/tiny", files)
    uri = f"s3://{bucket}/models/tiny"
    seen = []
    got = sources.fetch_model(uri, sink=seen.append)
    assert read_files(got.local) == files and locate_model(uri) == got.local
    assert {v.key: v.etag for v in got.objects} == etags
    assert seen[-1].done and seen[-1].bytes == seen[-1].total_bytes == sum(map(len, files.values()))
    assert [o.etag for o in model_lineage(uri).objects] == [etags[k] for k in sorted(etags)]

    (got.local / "marker").write_text("kept")  # the same objects again: the copy is reused
    sources.forget()
    assert sources.fetch_model(uri).local == got.local and (got.local / "marker").exists()
    client.put_object(Bucket=bucket, Key="models/tiny/config.json", Body=files["config.json"] + b" ")
    sources.forget()  # a changed object: another ETag, another copy
    assert sources.fetch_model(uri).local != got.local


def test_a_dataset_is_read_from_s3_with_its_etag_in_the_lineage(s3):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="data/train.jsonl", Body=ROWS)
    etag = client.head_object(Bucket=bucket, Key="data/train.jsonl")["ETag"].strip('"')
    uri = f"s3://{bucket}/data/train.jsonl"
    assert sources.fetch_data(uri).objects[0].etag == etag
    assert [values["animal"] for _, values in readers.records(uri)] == ["cat", "dog"]
    lineage = dataset_lineage("train", uri)
    assert (lineage.etag, lineage.rows, lineage.bytes) == (etag, 2, len(ROWS))


def test_results_are_uploaded_and_an_existing_prefix_is_never_overwritten(s3, tmp_path):
    client, bucket = s3
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    (tmp_path / "training_summary.json").write_text('{"ok": true}')
    (tmp_path / "scratch.txt").write_text("not uploaded")
    uri = f"s3://{bucket}/runs/one"
    seen = []
    written = objects.upload(tmp_path, uri, ["adapter", "training_summary.json", "README.md"], seen.append)
    assert written == ["adapter/adapter_config.json", "training_summary.json"]  # a missing name is skipped
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="runs/")["Contents"])
    assert keys == ["runs/one/adapter/adapter_config.json", "runs/one/training_summary.json"]
    assert client.get_object(Bucket=bucket, Key="runs/one/training_summary.json")["Body"].read() == b'{"ok": true}'
    assert seen[-1].done and seen[-1].bytes == seen[-1].total_bytes == 2 + 12

    with pytest.raises(ConfigError, match="exists; kubetune never overwrites"):
        objects.upload(tmp_path, uri, ["training_summary.json"])


def test_a_missing_bucket_is_source_not_found_naming_uri_and_field(s3):
    for call, uri, field in ((sources.fetch_model, "s3://no-such-bucket/models/tiny", "model.path"),
                             (sources.fetch_data, "s3://no-such-bucket/train.jsonl", "dataset.path"),
                             (objects.check_destination, "s3://no-such-bucket/runs/one", "output.uri")):
        error = failure(call, uri, field)
        assert error.reason == Reason.SourceNotFound.value
        assert f"{field} {uri!r}" in str(error) and "no bucket" in str(error)


def test_a_missing_key_is_source_not_found(s3):
    _, bucket = s3
    error = failure(sources.fetch_data, f"s3://{bucket}/nothing.jsonl", "dataset.tasks[qa].path")
    assert error.reason == Reason.SourceNotFound.value and "dataset.tasks[qa].path" in str(error)


def test_wrong_keys_are_source_unauthorized(s3, monkeypatch):
    client, bucket = s3
    client.put_object(Bucket=bucket, Key="data/train.jsonl", Body=ROWS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    for call, uri in ((sources.fetch_data, f"s3://{bucket}/data/train.jsonl"),
                      (sources.fetch_model, f"s3://{bucket}/data"),
                      (objects.check_destination, f"s3://{bucket}/runs/two")):
        error = failure(call, uri, "field")
        assert error.reason == Reason.SourceUnauthorized.value and uri in str(error)


def test_an_unreachable_store_is_source_unavailable(s3, monkeypatch):
    from sources_fixtures import closed_port

    _, bucket = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    error = failure(sources.fetch_data, f"s3://{bucket}/data/train.jsonl", "dataset.path")
    assert error.reason == Reason.SourceUnavailable.value and "cannot reach the store" in str(error)


@pytest.mark.parametrize("uri, package", [("gs://bucket/rows.jsonl", "gcsfs"), ("az://container/rows.jsonl", "adlfs")])
def test_a_store_without_its_package_in_the_image_names_the_package(uri, package):
    try:
        __import__(package)
        pytest.skip(f"{package} is installed here")
    except ImportError:
        pass
    error = failure(sources.fetch_data, uri, "dataset.path")
    assert error.reason == Reason.SourceUnavailable.value and f"pip install {package}" in str(error)
