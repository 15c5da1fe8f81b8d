"""kubetune-eval on chat rows (dataset.conversations): the prompt is every turn before the last
assistant message, rendered with the model's chat template; the reference is that message."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chat_families import CHAT_FILE, family_tokenizer, tiny_chat_model_dir
from kubetune_trainer.data.conversations import read_conversation
from kubetune_api.conversations import ConversationsSpec
from kubetune_trainer.evaluation import cli
from kubetune_trainer.evaluation.dataset import load_items
from kubetune_api.evaluation import EvalConfig
from test_eval_cli import api  # noqa: F401 - the reporter fixture

@pytest.fixture(scope="module")
def qwen_tiny_dir(tmp_path_factory) -> Path:
    return tiny_chat_model_dir(tmp_path_factory.mktemp("tiny-qwen-eval"))



def config_dict(tmp_path: Path, model: Path) -> dict:
    return {
        "models": [{"name": "base", "path": str(model)}],
        "dataset": {"path": str(CHAT_FILE), "conversations": {"style": "openai"}, "maxExamples": 4},
        "metrics": ["rouge", "exact_match"],
        "generation": {"maxNewTokens": 6, "batchSize": 4},
        "samples": 2,
        "output": {"path": str(tmp_path / "out")},
    }


def test_items_are_the_turns_before_the_last_assistant_message(tmp_path, qwen_tiny_dir):
    config = EvalConfig.model_validate(config_dict(tmp_path, qwen_tiny_dir))
    items, rows = load_items(config)
    first = json.loads(CHAT_FILE.read_text().splitlines()[0])
    assert rows == 48 and len(items) == 4
    assert items[0].references == [first["messages"][-1]["content"]]
    assert items[0].conversation == read_conversation(ConversationsSpec(), first, "x")


def test_cli_scores_chat_rows(tmp_path, qwen_tiny_dir, api, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, qwen_tiny_dir)))
    assert cli.main(["--config", str(path)]) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["counts"]["examples"] == 4 and {"rouge1", "exactMatch"} <= set(scores["models"][0]["scores"])
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions-base.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in CHAT_FILE.read_text().splitlines()[:4]]
    tokenizer = family_tokenizer("qwen2.5")
    for record, row in zip(records, rows):
        context = row["messages"][:-1]
        conversation = read_conversation(ConversationsSpec(), row, "x")
        messages, tools = conversation.as_lists()
        expected = tokenizer.apply_chat_template(messages[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
        assert record["prompt"] == expected and record["references"] == [row["messages"][-1]["content"]]
        assert context[-1]["role"] == "tool" and record["prompt"].endswith("<|im_start|>assistant\n")


def test_check_phase_refuses_a_chat_row_the_template_cannot_take(tmp_path, qwen_tiny_dir, api):
    rows = [json.loads(line) for line in CHAT_FILE.read_text().splitlines()[:3]]
    rows[2]["messages"][-1]["content"] = "   "
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config_dict(tmp_path, qwen_tiny_dir)
    config["dataset"]["path"] = str(data)
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["--config", str(path), "--check-only"]) != 0
    message = (tmp_path / "termination-log").read_text()
    assert f"{data} line 3: the last assistant message has no text content" in message


def test_reused_predictions_keep_the_rendered_prompt(tmp_path, qwen_tiny_dir, api, capsys):
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config_dict(tmp_path, qwen_tiny_dir)))
    predictions = tmp_path / "out" / "predictions-base.jsonl"
    assert cli.main(["--config", str(path)]) == 0
    first = predictions.read_text()
    assert cli.main(["--config", str(path)]) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["models"][0].get("cached") is True
    assert predictions.read_text() == first
    assert json.loads(first.splitlines()[0])["prompt"].endswith("<|im_start|>assistant\n")
