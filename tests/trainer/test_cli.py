"""kubetune-train end to end on the tiny model, and its exit codes and termination messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubetune_trainer.cli import main
from tinymodels import TEMPLATE, make_rows, write_jsonl


def write_config(path: Path, model, data, output, **overrides) -> Path:
    config = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "maxLength": 64},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": 6, "batchSize": 8, "learningRate": 1e-2, "logEverySteps": 2, "evalEverySteps": 3},
        "output": {"path": str(output)},
        **overrides,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_trains_and_writes_summary_adapter_and_termination_message(
    tiny_model_dir, dataset_file, tmp_path, termination_log, capsys
):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, tmp_path / "ignored")
    out = tmp_path / "out"
    assert main(["--config", str(config), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "training_summary.json")

    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["config"]["output"]["path"] == str(out) and summary["config"]["training"]["maxSteps"] == 6
    assert summary["data"] == {"rows": 48, "train": 38, "validation": 5, "test": 5,
                               "truncated": {"train": 0, "validation": 0, "test": 0}}
    assert 0 < summary["parameters"]["trainable"] < summary["parameters"]["total"]
    metrics = summary["metrics"]
    assert all(metrics[k] is not None for k in ("trainLoss", "validationLoss", "validationAccuracy", "testLoss", "testAccuracy"))
    assert summary["finalTrainLoss"] == metrics["trainLoss"]
    assert [e["step"] for e in summary["history"]] == [2, 3, 4, 6]
    assert summary["throughput"]["tokensPerSecond"] > 0 and summary["wallTimeSeconds"] > 0
    assert summary["throughput"]["trainSeconds"] > 0  # progress rounds it to 0.1 s: a tiny run may show 0.0
    assert abs(summary["progress"]["trainSeconds"] - summary["throughput"]["trainSeconds"]) <= 0.051
    assert summary["versions"]["torch"] and summary["versions"]["peft"]
    assert summary["artifacts"]["modelPath"] == str(out / "adapter")
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 5 and all(set(p) == {"prompt", "reference", "prediction"} for p in predictions)
    assert summary["predictions"]["rows"] == 5 and summary["processes"] == 1 and summary["resumedFromStep"] is None
    card = (out / "README.md").read_text()
    assert "method `lora`" in card and "AutoPeftModelForCausalLM" in card and str(out / "adapter") in card
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6"]

    message = json.loads(termination_log.read_text())
    assert message["progress"]["step"] == 6 and message["metrics"]["testLoss"] == metrics["testLoss"]
    assert message["artifacts"]["summaryPath"] == str(out / "training_summary.json")
    assert message["message"].startswith("lora training finished after 6 steps, test loss")


def test_bad_data_exits_3_with_the_error_in_the_termination_message(tiny_model_dir, tmp_path, termination_log):
    rows = make_rows(10)
    del rows[4]["answer"]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, data, tmp_path / "out")
    assert main(["--config", str(config)]) == 3
    assert json.loads(termination_log.read_text()) == {
        "error": f"DataError: {data} line 5: completion field 'answer' is missing",
        "reason": "InvalidDataset",  # becomes the FineTuneJob's condition reason
    }


@pytest.mark.parametrize("problem", ["unknown field", "missing model", "missing config"])
def test_bad_config_exits_2(problem, tiny_model_dir, dataset_file, tmp_path, termination_log):
    config = tmp_path / "config.yaml"
    if problem == "unknown field":
        write_config(config, tiny_model_dir, dataset_file, tmp_path / "out", epochz=3)
    elif problem == "missing model":
        write_config(config, tmp_path / "no-model", dataset_file, tmp_path / "out")
    assert main(["--config", str(config)]) == 2
    error = json.loads(termination_log.read_text())["error"]
    assert error.startswith("ModelSourceError" if problem == "missing model" else "ConfigError")
    assert {"unknown field": "epochz", "missing model": "no-model", "missing config": "config.yaml"}[problem] in error


def test_console_script_runs(tiny_model_dir, dataset_file, tmp_path):
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, tmp_path / "out",
                          training={"maxSteps": 1, "batchSize": 4})
    script = Path(sys.executable).with_name("kubetune-train")
    done = subprocess.run([str(script), "--config", str(config)], capture_output=True, text=True,
                          env={**os.environ, "KUBETUNE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "out" / "training_summary.json")
    assert "step 1/1 train loss" in done.stderr


# Runs `kubetune-train --check-only ARGS` in a fresh interpreter and prints which heavy
# libraries it imported: the check phase must load no model (and no torch).
CHECK_ONLY = ("import sys; from kubetune_trainer.cli import main; code = main(sys.argv[1:]); "
              "print('imported:', sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules)); "
              "sys.exit(code)")


def check_only(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHECK_ONLY, "--config", str(config), "--check-only"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=60)


def test_check_only_passes_prints_what_it_checked_and_writes_nothing(tiny_model_dir, dataset_file, tmp_path, termination_log):
    out = tmp_path / "out"
    done = check_only(write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"check passed: 48 dataset rows, model at {tiny_model_dir}, output in {out}",
                                        "imported: []"]
    assert not out.exists() and not termination_log.exists()


def test_check_only_on_bad_data_exits_3_with_reason_invalid_dataset(tiny_model_dir, tmp_path, termination_log):
    rows = make_rows(10)
    del rows[4]["answer"]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    done = check_only(write_config(tmp_path / "config.yaml", tiny_model_dir, data, tmp_path / "out"))
    assert done.returncode == 3 and done.stdout.strip() == "imported: []"
    assert json.loads(termination_log.read_text()) == {
        "error": f"DataError: {data} line 5: completion field 'answer' is missing", "reason": "InvalidDataset"}
    assert not (tmp_path / "out").exists()


def test_check_only_on_a_missing_model_exits_2_with_reason_invalid_model(dataset_file, tmp_path, termination_log):
    done = check_only(write_config(tmp_path / "config.yaml", tmp_path / "no-model", dataset_file, tmp_path / "out"))
    assert done.returncode == 2 and done.stdout.strip() == "imported: []"
    message = json.loads(termination_log.read_text())
    assert message["reason"] == "InvalidModel" and message["error"].startswith("ModelSourceError: model.path")


def test_training_refuses_an_output_outside_the_writable_roots_before_any_work(
    tiny_model_dir, dataset_file, tmp_path, termination_log, monkeypatch
):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "escape").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("KUBETUNE_WRITABLE_ROOTS", "")  # only the working directory
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, "escape/out")
    assert main(["--config", str(config)]) == 2
    message = json.loads(termination_log.read_text())
    assert message["reason"] == "InvalidConfig" and f"resolves to {tmp_path / 'out'}" in message["error"]
    assert not (tmp_path / "out").exists()


def test_every_file_goes_under_the_resolved_output_dir(tiny_model_dir, dataset_file, tmp_path, monkeypatch):
    work, volume = tmp_path / "work", tmp_path / "volume"
    work.mkdir(), volume.mkdir()
    (work / "link").symlink_to(volume)  # to an allowed root: fine, and recorded as the real path
    monkeypatch.chdir(work)
    monkeypatch.setenv("KUBETUNE_WRITABLE_ROOTS", str(volume))
    config = write_config(tmp_path / "config.yaml", tiny_model_dir, dataset_file, "link/out",
                          training={"maxSteps": 1, "batchSize": 4})
    assert main(["--config", str(config)]) == 0
    summary = json.loads((volume / "out" / "training_summary.json").read_text())
    assert summary["artifacts"] == {"outputPath": str(volume / "out"), "modelPath": str(volume / "out" / "adapter"),
                                    "summaryPath": str(volume / "out" / "training_summary.json")}
    assert summary["predictions"]["path"] == str(volume / "out" / "predictions.jsonl")
    assert sorted(p.name for p in (volume / "out").iterdir()) == [
        "README.md", "adapter", "checkpoints", "predictions.jsonl", "training_summary.json"]
    assert [p.name for p in work.iterdir()] == ["link"]
