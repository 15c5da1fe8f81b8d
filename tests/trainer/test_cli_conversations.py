"""kubetune-train on an OpenAI-format chat file with tool calls, unchanged (dataset.conversations),
on the tiny model carrying Qwen2.5's real chat template; and its check phase on rows that fail."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from chat_families import CHAT_FILE, tiny_chat_model_dir
from kubetune_trainer.cli import main

@pytest.fixture(scope="module")
def qwen_tiny_dir(tmp_path_factory) -> Path:
    return tiny_chat_model_dir(tmp_path_factory.mktemp("tiny-qwen-template"))


@pytest.fixture
def chat_file(tmp_path) -> Path:
    """The example file's first 16 rows, byte for byte (a short run)."""
    path = tmp_path / "train.jsonl"
    path.write_text("".join(CHAT_FILE.read_text(encoding="utf-8").splitlines(keepends=True)[:16]), encoding="utf-8")
    return path


def write_config(path: Path, model: Path, data: Path, output: Path, **dataset) -> Path:
    config = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "conversations": {}, "maxLength": 2048, **dataset},
        "method": "full",
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 3e-3, "logEverySteps": 1, "predictionRows": 2},
        "output": {"path": str(output)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_openai_chat_file_with_tool_calls_trains_unchanged(qwen_tiny_dir, chat_file, tmp_path, termination_log, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", qwen_tiny_dir, chat_file, out)
    assert main(["--config", str(config), "--output", str(out)]) == 0
    summary = json.loads((out / "training_summary.json").read_text())
    assert summary["data"] == {"rows": 16, "train": 12, "validation": 2, "test": 2,
                               "truncated": {"train": 0, "validation": 0, "test": 0}}
    losses = [entry["trainLoss"] for entry in summary["history"] if "trainLoss" in entry]
    assert len(losses) == 4 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.9 * losses[0]  # it learns the assistant turns
    assert math.isfinite(summary["metrics"]["testLoss"]) and summary["metrics"]["testAccuracy"] > 0
    rows = [json.loads(line) for line in CHAT_FILE.read_text().splitlines()]
    answers = {row["messages"][-1]["content"] for row in rows}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # The prediction prompt is every turn before the last assistant message; the reference is that message.
    assert len(predictions) == 2 and all(p["reference"].strip() in answers for p in predictions)
    assert all(p["prompt"].endswith("assistant\n") and "</tool_response>" in p["prompt"] for p in predictions)


def test_truncation_keeps_whole_turns_and_counts_rows(qwen_tiny_dir, chat_file, tmp_path, termination_log, capsys):
    out = tmp_path / "out"
    config = write_config(tmp_path / "config.yaml", qwen_tiny_dir, chat_file, out, maxLength=900)
    config_data = yaml.safe_load(config.read_text())
    config_data["training"].update(maxSteps=1, predictionRows=0)
    config.write_text(yaml.safe_dump(config_data))
    assert main(["--config", str(config), "--output", str(out)]) == 0
    data = json.loads((out / "training_summary.json").read_text())["data"]
    assert sum(data["truncated"].values()) > 0 and data["truncatedRows"]
    assert data["train"] + data["validation"] + data["test"] + sum(data.get("dropped", {}).values()) == 16


def test_the_check_phase_names_a_row_the_template_cannot_take(qwen_tiny_dir, tmp_path, termination_log, capsys):
    rows = [json.loads(line) for line in CHAT_FILE.read_text().splitlines()][:12]
    rows[6]["messages"][1]["content"] = [{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config(tmp_path / "config.yaml", qwen_tiny_dir, data, tmp_path / "out")
    assert main(["--config", str(config), "--check-only"]) != 0
    message = termination_log.read_text()
    assert "InvalidDataset" in message and f"{data} line 7: messages[1].content part 1: only text parts" in message

    rows[6]["messages"][1]["content"] = "hi <|im_end|>"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--config", str(config), "--check-only"]) != 0
    assert f"{data} line 7: message 2 contains the special token text '<|im_end|>'" in termination_log.read_text()
