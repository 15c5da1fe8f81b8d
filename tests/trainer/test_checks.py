"""The check phase: data, model location and output directory of a training or evaluation
config, each failure with its named reason; nothing loads and nothing is written."""
from __future__ import annotations

import pytest

from kubetune_api.errors import ConfigError, DataError, MetricError, ModelSourceError
from kubetune_api.evaluation import EvalConfig
from kubetune_api.training import TrainingConfig
from kubetune_api.wire import ENV_WRITABLE_ROOTS
from kubetune_trainer.checks import CheckReport, check_evaluation, check_model_path, check_training
from tinymodels import TEMPLATE, make_rows, write_jsonl


def training(model, data, output) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "model": {"path": str(model)}, "method": "lora", "output": {"path": str(output)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer"},
    })


def evaluation(models: list[dict], data, output, **overrides) -> EvalConfig:
    return EvalConfig.model_validate({
        "models": models, "output": {"path": str(output)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]}, **overrides,
    })


def test_a_good_training_config_reports_rows_model_and_output(tiny_model_dir, dataset_file, tmp_path):
    report = check_training(training(tiny_model_dir, dataset_file, tmp_path / "out"))
    assert report == CheckReport(48, (tiny_model_dir,), tmp_path / "out")
    assert report.describe() == f"check passed: 48 dataset rows, model at {tiny_model_dir}, output in {tmp_path / 'out'}"
    assert not (tmp_path / "out").exists()


def test_each_failure_has_its_reason(tiny_model_dir, dataset_file, tmp_path, monkeypatch):
    rows = make_rows(10)
    del rows[2]["animal"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: field 'animal'") as e:
        check_training(training(tiny_model_dir, bad, tmp_path / "out"))
    assert e.value.reason == "InvalidDataset"
    with pytest.raises(ModelSourceError, match="does not exist") as e:
        check_training(training(tmp_path / "no-model", dataset_file, tmp_path / "out"))
    assert e.value.reason == "InvalidModel"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_WRITABLE_ROOTS, "")
    with pytest.raises(ConfigError, match=r"output\.path") as e:
        check_training(training(tiny_model_dir, dataset_file, "/etc/out"))
    assert e.value.reason == "InvalidConfig"


def test_model_path_must_look_like_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json"):
        check_model_path(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelSourceError, match=r"models\[tuned\]\.path .* neither a checkpoint directory nor a \.gguf"):
        check_model_path(str(tmp_path / "weights.bin"), "models[tuned].path")
    (tmp_path / "m.gguf").write_bytes(b"")
    assert check_model_path(str(tmp_path / "m.gguf")) == tmp_path / "m.gguf"


def test_evaluation_checks_metrics_models_adapters_and_rows(tiny_model_dir, dataset_file, tmp_path):
    base = {"name": "base", "path": str(tiny_model_dir)}
    report = check_evaluation(evaluation([base, {**base, "name": "again"}], dataset_file, tmp_path / "out", metrics=["rouge"]))
    assert report == CheckReport(48, (tiny_model_dir, tiny_model_dir), tmp_path / "out")
    with pytest.raises(MetricError, match="'accuracy' cannot score task generation") as e:
        check_evaluation(evaluation([base], dataset_file, tmp_path / "out", metrics=["accuracy"]))
    assert e.value.reason == "UnknownMetric"
    with pytest.raises(ModelSourceError, match=r"models\[tuned\]\.adapter .* has no adapter_config\.json"):
        check_evaluation(evaluation([base, {**base, "name": "tuned", "adapter": str(tmp_path)}], dataset_file, tmp_path / "out"))
    with pytest.raises(ModelSourceError, match=r"models\[base\]\.path"):
        check_evaluation(evaluation([{**base, "path": str(tmp_path / "nope")}], dataset_file, tmp_path / "out"))
    with pytest.raises(DataError, match="nope.jsonl"):
        check_evaluation(evaluation([base], tmp_path / "nope.jsonl", tmp_path / "out"))
