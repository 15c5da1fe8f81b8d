"""kubetune-promote on a LoRA adapter trained in-test: the destination reloads with plain
transformers/peft, merged or not, and a failure leaves nothing at the destination."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from kubetune_trainer import cli
from kubetune_trainer.promotion import promote
from tinymodels import TEMPLATE


@pytest.fixture
def trained(tiny_model_dir, dataset_file, tmp_path) -> Path:
    """The output directory of a 2-step LoRA run of kubetune-train."""
    out = tmp_path / "out"
    config = {
        "model": {"path": str(tiny_model_dir)},
        "dataset": {"path": str(dataset_file), "promptTemplate": TEMPLATE, "completionField": "answer", "maxLength": 64},
        "method": "lora", "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": 2, "batchSize": 8, "learningRate": 5e-2, "predictionRows": 1},
        "output": {"path": str(out)},
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    assert cli.main(["--config", str(tmp_path / "train.yaml")]) == 0
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text('{"tuned": {"rougeL": 0.5}}')
    return out


def promote_config(tmp_path, trained, destination, **overrides) -> str:
    config = {
        "modelPath": str(trained / "adapter"), "adapter": True, "destination": str(destination),
        "files": {"README.md": str(trained / "README.md"), "training_summary.json": str(trained / "training_summary.json"),
                  "scores.json": str(trained / "eval" / "scores.json"), "lineage.json": str(trained / "absent.json")},
        "record": {"fineTuneJob": {"namespace": "team-a", "name": "demo"}, "rules": [{"metric": "rougeL", "passed": True}]},
        **overrides,
    }
    path = tmp_path / "promote.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def logits(model, tokenizer_dir) -> torch.Tensor:
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir)("Which animal is red cat?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        return model.eval()(ids).logits


def tuned_logits(tiny_model_dir, adapter) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter), adapter)


def no_staging_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".promoting-" in p.name]


def test_adapter_is_promoted_with_card_scores_and_record(tiny_model_dir, trained, tmp_path, termination_log, capsys):
    destination = tmp_path / "serving" / "v1"
    assert promote.main(["--config", promote_config(tmp_path, trained, destination)]) == 0
    assert capsys.readouterr().out.strip() == str(destination / "adapter")

    assert sorted(p.name for p in destination.iterdir()) == [
        "README.md", "adapter", "promotion.json", "scores.json", "training_summary.json"]
    assert torch.allclose(tuned_logits(tiny_model_dir, destination / "adapter"), tuned_logits(tiny_model_dir, trained / "adapter"))
    record = json.loads((destination / "promotion.json").read_text())
    assert record["fineTuneJob"]["name"] == "demo" and record["rules"][0]["metric"] == "rougeL"
    assert record["merged"] is False and record["model"] == "adapter"
    assert no_staging_left(destination.parent)
    message = json.loads(termination_log.read_text())
    assert message["artifacts"]["modelPath"] == str(destination / "adapter") and message["message"].startswith("promoted to")


def test_merged_adapter_reloads_as_a_plain_model(tiny_model_dir, trained, tmp_path):
    from transformers import AutoModelForCausalLM

    destination = tmp_path / "merged"
    config = promote_config(tmp_path, trained, destination, mergeAdapter=True, baseModel={"path": str(tiny_model_dir)})
    assert promote.main(["--config", config]) == 0

    model_dir = destination / "model"
    assert not (model_dir / "adapter_config.json").exists() and (model_dir / "tokenizer.json").is_file()
    merged = logits(AutoModelForCausalLM.from_pretrained(model_dir), model_dir)
    tuned = tuned_logits(tiny_model_dir, trained / "adapter")
    assert torch.allclose(merged, tuned, atol=1e-4)
    assert not torch.allclose(merged, logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_model_dir), atol=1e-4)
    assert json.loads((destination / "promotion.json").read_text())["merged"] is True


def test_merged_adapter_is_exported_as_gguf_next_to_the_model(tiny_model_dir, trained, tmp_path):
    import hashlib

    from transformers import AutoModelForCausalLM, AutoTokenizer

    destination = tmp_path / "exported"
    config = promote_config(tmp_path, trained, destination, mergeAdapter=True, baseModel={"path": str(tiny_model_dir)},
                            export={"format": "gguf", "quantization": "F32"})
    assert promote.main(["--config", config]) == 0

    gguf_file = destination / "model.F32.gguf"
    assert sorted(p.name for p in destination.iterdir()) == [
        "README.md", "model", "model.F32.gguf", "promotion.json", "scores.json", "training_summary.json"]
    exported = AutoModelForCausalLM.from_pretrained(destination, gguf_file=gguf_file.name)
    ids = AutoTokenizer.from_pretrained(destination, gguf_file=gguf_file.name)("Which animal is red cat?\nAnswer:", return_tensors="pt").input_ids
    assert ids[0].tolist() == AutoTokenizer.from_pretrained(destination / "model")("Which animal is red cat?\nAnswer:").input_ids
    with torch.no_grad():
        from_gguf = exported.eval()(ids).logits
    assert torch.allclose(from_gguf, logits(AutoModelForCausalLM.from_pretrained(destination / "model"), destination / "model"), atol=1e-4)
    record = json.loads((destination / "promotion.json").read_text())
    assert record["export"] == {"format": "gguf", "file": "model.F32.gguf", "quantization": "F32", "bytes": gguf_file.stat().st_size,
                                "sha256": hashlib.sha256(gguf_file.read_bytes()).hexdigest()}
    assert "model.F32.gguf" in record["files"]


def test_an_unexportable_model_leaves_nothing_at_the_destination(trained, tmp_path, termination_log):
    """The trained model dir is an adapter: export refuses before anything is promoted."""
    destination = tmp_path / "exported"
    config = promote_config(tmp_path, trained, destination, export={"quantization": "Q8_0"})
    assert promote.main(["--config", config]) == 2
    assert not destination.exists() and no_staging_left(tmp_path)
    assert "export needs a full model" in json.loads(termination_log.read_text())["error"]


def test_a_failure_mid_copy_leaves_nothing_at_the_destination(trained, tmp_path, termination_log):
    destination = tmp_path / "serving" / "v1"
    # A directory where a file is expected: the copy fails after the adapter is staged.
    config = promote_config(tmp_path, trained, destination, files={"README.md": str(trained / "README.md"),
                                                                   "broken.json": str(trained / "adapter")})
    assert promote.main(["--config", config]) == 1
    assert not destination.exists() and no_staging_left(destination.parent)
    assert "IsADirectoryError" in json.loads(termination_log.read_text())["error"]


def test_an_existing_destination_is_never_overwritten(trained, tmp_path, termination_log):
    destination = tmp_path / "taken"
    destination.mkdir()
    (destination / "keep.txt").write_text("x")
    assert promote.main(["--config", promote_config(tmp_path, trained, destination)]) == 2
    assert [p.name for p in destination.iterdir()] == ["keep.txt"]
    error = json.loads(termination_log.read_text())
    assert error["reason"] == "InvalidConfig" and "exists" in error["error"]


def test_a_destination_outside_the_writable_volumes_is_refused(trained, tmp_path, monkeypatch, termination_log):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KUBETUNE_WRITABLE_ROOTS", str(tmp_path / "volume"))
    assert promote.main(["--config", promote_config(tmp_path, trained, "/etc/kubetune-promoted")]) == 2
    assert "promotion.destination" in json.loads(termination_log.read_text())["error"]
    assert not Path("/etc/kubetune-promoted").exists()


def test_a_merged_model_promoted_to_an_object_store_is_the_one_registered(tiny_model_dir, trained, tmp_path, monkeypatch):
    """spec.tracking's registered version is the model as promoted (merged), not the adapter as trained."""
    from kubetune_api.promotion import load_promote_config
    from sources_fixtures import MotoS3, s3_filesystems_forget

    server = MotoS3().start()
    try:
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        server.client().create_bucket(Bucket="models")
        s3_filesystems_forget()
        config = load_promote_config(promote_config(tmp_path, trained, "s3://models/promoted", mergeAdapter=True,
                                                    baseModel={"path": str(tiny_model_dir)}))
        registered = []
        uri, tracked = promote._to_object_store(config, lambda model_dir: registered.append(sorted(p.name for p in model_dir.iterdir())))
    finally:
        s3_filesystems_forget()
        server.stop()
    assert uri == "s3://models/promoted/model" and tracked is None
    ((files,),) = [registered]
    assert "config.json" in files and "model.safetensors" in files and "adapter_config.json" not in files
