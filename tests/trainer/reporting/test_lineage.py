"""Lineage: file and directory digests, the config hash, the lineage of a training run in its
summary and model card, and that the same lineage and seed give the same loss curve."""
from __future__ import annotations

import gzip
import hashlib
import json

import pytest
import yaml

from kubetune_api.training import TrainingConfig
from kubetune_trainer.cli import main
from kubetune_trainer.reporting.lineage import config_hash, dataset_lineage, digest, manifest, model_lineage, training_lineage
from test_cli import write_config
from tinymodels import make_rows, write_jsonl


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_file_digest_is_the_sha256_of_its_bytes_as_stored(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_rows())
    packed = tmp_path / "data.jsonl.gz"
    packed.write_bytes(gzip.compress(data.read_bytes()))
    assert digest(str(data)).sha256 == sha256(data) and digest(str(data)).bytes == data.stat().st_size
    assert digest(str(packed)).sha256 == sha256(packed)  # not decompressed: what sha256sum prints
    assert digest(f"file://{data}").sha256 == sha256(data)


def _tree(root, files: dict[str, bytes]):
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def test_a_directory_digest_is_its_manifest_whatever_the_order_files_were_written(tmp_path):
    files = {"config.json": b"{}", "weights/a.bin": b"\x00" * 3000, "tokenizer.json": b"tok"}
    first = _tree(tmp_path / "one", files)
    second = _tree(tmp_path / "two", dict(reversed(list(files.items()))))
    expected = manifest({name: hashlib.sha256(content).hexdigest() for name, content in files.items()})
    assert expected.splitlines()[0] == f"config.json\t{hashlib.sha256(b'{}').hexdigest()}"
    d = digest(str(first))
    assert d.sha256 == hashlib.sha256(expected.encode()).hexdigest() == digest(str(second)).sha256
    assert (d.files, d.bytes) == (3, 3000 + 2 + 3)
    (second / "weights" / "a.bin").write_bytes(b"\x01" + b"\x00" * 2999)
    assert digest(str(second)).sha256 != d.sha256
    lineage = model_lineage(str(first))
    assert lineage.digest == f"sha256:{d.sha256}" and lineage.files == 3 and lineage.uri == str(first)


def test_a_saved_hf_dataset_is_named_by_its_manifest_and_counted(tmp_path):
    import datasets

    datasets.Dataset.from_list(make_rows(12)).save_to_disk(str(tmp_path / "saved"))
    entry = dataset_lineage("train", str(tmp_path / "saved"))
    assert entry.sha256 == digest(str(tmp_path / "saved")).sha256 and entry.rows == 12
    assert entry.bytes == sum(f.stat().st_size for f in (tmp_path / "saved").rglob("*") if f.is_file())


def _config(tmp_path, data, **training) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "model": {"path": str(tmp_path)}, "dataset": {"path": str(data), "promptTemplate": "{{ color }}", "completionField": "answer"},
        "training": {"seed": 7, **training}, "output": {"path": str(tmp_path / "out")}})


def test_the_config_hash_is_stable_and_follows_the_seed_but_not_the_output(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", make_rows())
    config = _config(tmp_path, data)
    again = TrainingConfig.model_validate(json.loads(json.dumps(config.model_dump(by_alias=True, mode="json"))))
    assert config_hash(config).startswith("sha256:") and config_hash(config) == config_hash(again)
    assert config_hash(config) != config_hash(_config(tmp_path, data, seed=8))
    moved = config.model_copy(update={"output": config.output.model_copy(update={"path": str(tmp_path / "elsewhere")})})
    assert config_hash(moved) == config_hash(config)


def test_training_lineage_names_every_file_with_its_rows(tiny_model_dir, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_rows(20))
    test = write_jsonl(tmp_path / "test.jsonl", make_rows(6))
    retention = write_jsonl(tmp_path / "retention.jsonl", make_rows(30))
    config = TrainingConfig.model_validate({
        "model": {"path": str(tiny_model_dir)},
        "dataset": {"path": str(train), "testPath": str(test), "promptTemplate": "{{ color }}", "completionField": "answer",
                    "retention": {"path": str(retention), "promptTemplate": "{{ color }}", "completionField": "answer",
                                  "maxExamples": 10}},
        "output": {"path": str(tmp_path / "out")}})
    lineage = training_lineage(config, {"python": "3.11", "missing": None})
    assert [(d.role, d.uri, d.sha256, d.rows) for d in lineage.datasets] == [
        ("train", str(train), sha256(train), 20), ("test", str(test), sha256(test), 6),
        ("retention", str(retention), sha256(retention), 10)]
    assert lineage.model.digest == "sha256:" + digest(str(tiny_model_dir)).sha256
    assert lineage.versions == {"python": "3.11"} and lineage.config_hash == config_hash(config)


def _train(tmp_path, name, model, data, seed) -> dict:
    config = write_config(tmp_path / f"{name}.yaml", model, data, tmp_path / name,
                          training={"maxSteps": 4, "batchSize": 4, "learningRate": 1e-2, "logEverySteps": 1,
                                    "evalEverySteps": 2, "seed": seed})
    assert main(["--config", str(config)]) == 0
    return json.loads((tmp_path / name / "training_summary.json").read_text())


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    """Three runs on the tiny model: two with the same lineage and seed, one with another seed."""
    tmp_path = tmp_path_factory.mktemp("lineage")
    data = write_jsonl(tmp_path / "data.jsonl", make_rows())
    return data, [_train(tmp_path, name, tiny_model_dir, data, seed) for name, seed in (("a", 1), ("b", 1), ("c", 2))]


def test_the_summary_and_model_card_carry_the_lineage(runs, tiny_model_dir):
    data, (summary, _, _) = runs
    lineage = summary["lineage"]
    assert lineage["datasets"] == [{"role": "train", "uri": str(data), "sha256": sha256(data), "rows": 48,
                                    "bytes": data.stat().st_size}]
    assert lineage["model"] == {"role": "base", "uri": str(tiny_model_dir), "files": digest(str(tiny_model_dir)).files,
                                "digest": "sha256:" + digest(str(tiny_model_dir)).sha256}
    config = TrainingConfig.model_validate(yaml.safe_load(json.dumps(summary["config"])))
    assert lineage["configHash"] == config_hash(config)
    assert lineage["versions"]["torch"] == summary["versions"]["torch"] and "image" not in lineage
    card = (data.parent / "a" / "README.md").read_text()
    assert "## Lineage" in card and sha256(data) in card and lineage["model"]["digest"] in card
    assert lineage["configHash"] in card


def test_the_same_lineage_and_seed_give_the_same_loss_curve(runs):
    _, (first, second, other_seed) = runs
    assert first["lineage"] == second["lineage"]
    losses = [e["trainLoss"] for e in first["history"] if "trainLoss" in e]
    assert len(losses) == 4 and first["history"] == second["history"]
    assert other_seed["lineage"]["configHash"] != first["lineage"]["configHash"]
    assert other_seed["lineage"]["datasets"] == first["lineage"]["datasets"]
    assert [e.get("trainLoss") for e in other_seed["history"]] != [e.get("trainLoss") for e in first["history"]]
