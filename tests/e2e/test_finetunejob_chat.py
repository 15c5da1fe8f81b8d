"""Conversations end to end: an OpenAI-format chat file with tools and tool calls (the shipped
example, byte for byte) trains as a FineTuneJob, and its evaluation block scores the base model
and the tuned one on the same chat rows (prompt: every turn before the last assistant message)."""
from __future__ import annotations

import shutil

import pytest

from chat_families import CHAT_FILE, tiny_chat_model_dir
from kubectl_utils import apply, condition, get_json, in_workdir, wait_final, wait_for

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def chat_model_and_rows(tmp_path_factory):
    """A tiny model with Qwen2.5's chat template (it renders tools) and the example file, unchanged."""
    directory = tmp_path_factory.mktemp("chat-e2e")
    rows = directory / "train.jsonl"
    shutil.copyfile(CHAT_FILE, rows)
    return tiny_chat_model_dir(directory / "model"), rows


def test_an_openai_chat_file_trains_as_a_finetunejob_and_its_chat_rows_are_scored(operator, namespace, chat_model_and_rows, workdir):
    model, rows = chat_model_and_rows
    spec = {
        "model": {"path": str(model)},
        "dataset": {"path": str(rows), "conversations": {}, "maxLength": 2048},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01},
        "output": {"path": in_workdir(workdir / "out")},
        "resources": {"gpu": 1},
        "evaluation": {"dataset": {"path": str(rows), "conversations": {}, "maxExamples": 4},
                       "metrics": ["rouge"], "generation": {"maxNewTokens": 4}},
    }
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "chat", "namespace": namespace}, "spec": spec})
    ftj = wait_final("ftj", namespace, "chat")
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"]["step"] == 4 and status["metrics"]["trainLoss"] > 0 and status["metrics"]["testLoss"] > 0

    evj = wait_final("evj", namespace, "chat-eval")
    assert evj["status"]["phase"] == "Succeeded", evj["status"]
    results = evj["status"]["results"]
    assert [r["model"] for r in results] == ["base", "tuned"] and all(r["examples"] == 4 for r in results)
    assert all({"rouge1", "rougeL"} <= set(r["scores"]) for r in results)

    def mirrored():
        current = get_json("ftj", "chat", "-n", namespace)
        return current if any(c["type"] == "Evaluated" and c["status"] != "Unknown"
                              for c in current["status"].get("conditions", [])) else None
    evaluated = wait_for(mirrored, 60, "the chat evaluation to be mirrored into the FineTuneJob")
    assert condition(evaluated, "Evaluated")["reason"] == "Evaluated"
    assert evaluated["status"]["evaluation"]["scores"] == results[1]["scores"]
