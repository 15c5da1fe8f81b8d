"""Whole runs on the tiny model: per-task metrics of a mixture, and retention before/after training."""
from __future__ import annotations

import json

import pytest

from kubetune_api.training import TrainingConfig
from kubetune_trainer.reporting.status_reporter import StatusReporter
from kubetune_trainer.training.run import run
from tinymodels import COLORS, TEMPLATE, make_rows, write_jsonl

SHOUT = "Shout {{ word }}:"
METRIC_KEYS = {"validationLoss", "validationAccuracy", "testLoss", "testAccuracy"}


@pytest.fixture
def files(tmp_path):
    colors = [{"animal": r["animal"], "color": r["color"], "answer": " " + r["color"]} for r in make_rows(40)]
    shout = [{"word": w, "upper": " " + w.upper()} for w in COLORS * 3]
    return {
        "animals": write_jsonl(tmp_path / "animals.jsonl", make_rows(48)),
        "colors": write_jsonl(tmp_path / "colors.jsonl", colors),
        "shout": write_jsonl(tmp_path / "shout.jsonl", shout),
    }


def config(model_dir, dataset: dict, output, method="lora", **training) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "model": {"path": str(model_dir)},
        "dataset": {"maxLength": 64, **dataset},
        "method": method,
        **({"lora": {"r": 4, "alpha": 8, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"]}} if method in ("lora", "qlora") else {}),
        "training": {"maxSteps": 6, "batchSize": 8, "learningRate": 1e-2, "logEverySteps": 3, "predictionRows": 0, **training},
        "output": {"path": str(output)},
    })


def test_mixture_run_reports_per_task_and_overall_metrics(tiny_model_dir, files, tmp_path):
    dataset = {"tasks": [
        {"name": "animals", "path": str(files["animals"]), "promptTemplate": TEMPLATE, "completionField": "answer", "weight": 1},
        {"name": "colors", "path": str(files["colors"]), "promptTemplate": "Which color is {{ color }} {{ animal }}?\nAnswer:",
         "completionField": "answer", "weight": 3},
    ], "mixtureSize": 64}
    summary = json.loads(run(config(tiny_model_dir, dataset, tmp_path / "out"), StatusReporter()).read_text())
    metrics = summary["metrics"]
    assert set(metrics["tasks"]) == {"animals", "colors"}
    for name, numbers in metrics["tasks"].items():
        assert set(numbers) == METRIC_KEYS and all(v is not None for v in numbers.values()), name
        assert 0 <= numbers["validationAccuracy"] <= 1
    # The overall numbers are over all tasks' completion tokens: between the tasks' own.
    for key in ("validationLoss", "testLoss"):
        per_task = [numbers[key] for numbers in metrics["tasks"].values()]
        assert min(per_task) - 1e-6 <= metrics[key] <= max(per_task) + 1e-6
    data = summary["data"]
    assert data["train"] == 64 and data["tasks"]["animals"]["train"] == 16 and data["tasks"]["colors"]["train"] == 48
    assert data["tasks"]["animals"]["validation"] == 5 and data["tasks"]["colors"]["validation"] == 4
    assert data["validation"] == 9 and data["test"] == 9
    assert "retentionLossBefore" not in metrics or metrics["retentionLossBefore"] is None


def test_retention_loss_is_scored_before_and_after_training(tiny_model_dir, files, tmp_path):
    dataset = {"path": str(files["animals"]), "promptTemplate": TEMPLATE, "completionField": "answer",
               "retention": {"path": str(files["shout"]), "promptTemplate": SHOUT, "completionField": "upper", "maxExamples": 16}}
    summary = json.loads(run(config(tiny_model_dir, dataset, tmp_path / "out", method="full", maxSteps=12,
                                    learningRate=5e-2), StatusReporter()).read_text())
    m = summary["metrics"]
    assert m["retentionLossBefore"] is not None and m["retentionLossAfter"] is not None
    assert m["retentionLossChange"] == pytest.approx(m["retentionLossAfter"] - m["retentionLossBefore"])
    assert m["retentionAccuracyChange"] == pytest.approx(m["retentionAccuracyAfter"] - m["retentionAccuracyBefore"])
    assert abs(m["retentionLossChange"]) > 0.05, m  # training on animals moved the shouting task
    assert summary["data"]["retention"] == 16
    assert "tasks" not in m or m["tasks"] is None
