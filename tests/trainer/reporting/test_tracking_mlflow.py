"""Tracking to a real MLflow server (mlflow server, SQLite, local artifacts): the trainer, the
evaluator and the promotion pod log to one run, read back through MLflow's client; a server
that is down never fails the work and the report says why."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml

from kubetune_trainer import cli
from kubetune_trainer.promotion import promote
from kubetune_trainer.evaluation import cli as eval_cli
from tinymodels import TEMPLATE, make_rows, write_jsonl
from tracking_fixtures import MlflowServer, dead_url

STEPS, LOG_EVERY = 6, 2


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


def train_config(path: Path, model, data, output, tracking: dict) -> Path:
    path.write_text(yaml.safe_dump({
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "maxLength": 64},
        "method": "lora", "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": STEPS, "batchSize": 8, "learningRate": 1e-2, "logEverySteps": LOG_EVERY,
                     "evalEverySteps": 3, "predictionRows": 1},
        "output": {"path": str(output)},
        "tracking": tracking,
    }))
    return path


def test_train_evaluate_promote_leave_one_run_with_params_curve_scores_and_a_version(
        mlflow_server, tiny_model_dir, dataset_file, tmp_path, termination_log, monkeypatch):
    key = uuid.uuid4().hex  # the FineTuneJob's uid, as the operator sets it
    monkeypatch.setenv("KUBETUNE_TRACKING_KEY", key)
    monkeypatch.setenv("KUBETUNE_NAMESPACE", "team-a")
    tracking = {"mlflow": {"uri": mlflow_server.url, "registeredModel": "tiny-animals"}}
    out = tmp_path / "out"
    assert cli.main(["--config", str(train_config(tmp_path / "train.yaml", tiny_model_dir, dataset_file, out, tracking))]) == 0
    trained = json.loads(termination_log.read_text())["tracking"]
    client = mlflow_server.client()
    run = client.get_run(trained["runId"])
    assert run.info.experiment_id == trained["experimentId"]
    assert client.get_experiment(run.info.experiment_id).name == "team-a"  # the default: the namespace
    assert run.data.tags["kubetune.io/job-uid"] == key and run.info.status == "FINISHED"
    params = run.data.params
    assert params["method"] == "lora" and params["training.learningRate"] == "0.01" and params["lora.targetModules"] == '["q_proj", "v_proj"]'
    summary = json.loads((out / "training_summary.json").read_text())
    assert params["lineage.configHash"] == summary["lineage"]["configHash"]
    assert params["lineage.dataset.train.sha256"] == summary["lineage"]["datasets"][0]["sha256"]
    assert params["version.torch"] == summary["lineage"]["versions"]["torch"]
    curve = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    losses = {m.step: m.value for m in curve}
    assert [losses[e["step"]] for e in summary["history"] if "trainLoss" in e] == pytest.approx(
        [e["trainLoss"] for e in summary["history"] if "trainLoss" in e], abs=1e-6)
    assert run.data.metrics["final_test_loss"] == pytest.approx(summary["metrics"]["testLoss"])
    assert len(client.get_metric_history(run.info.run_id, "validation_loss")) == 2  # steps 3 and 6
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"adapter", "training_summary.json", "README.md"} <= artifacts
    assert "adapter/adapter_model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}

    # The evaluation block's EvalJob: its scores and deltas go to the same run.
    evaluation = tmp_path / "eval.yaml"
    evaluation.write_text(yaml.safe_dump({
        "models": [{"name": "base", "path": str(tiny_model_dir)}, {"name": "tuned", "path": str(tiny_model_dir), "adapter": str(out / "adapter")}],
        "dataset": {"path": str(write_jsonl(tmp_path / "eval.jsonl", make_rows(6))), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
        "metrics": ["exact_match", "token_f1"], "generation": {"maxNewTokens": 3, "batchSize": 6},
        "output": {"path": str(out / "eval")}, "tracking": tracking}))
    assert eval_cli.main(["--config", str(evaluation)]) == 0
    scores = json.loads((out / "eval" / "scores.json").read_text())
    metrics = client.get_run(run.info.run_id).data.metrics
    tuned = next(m for m in scores["models"] if m["model"] == "tuned") if "models" in scores else None
    assert json.loads(termination_log.read_text())["tracking"]["runId"] == run.info.run_id
    assert "eval/tuned/exactMatch" in metrics and "eval/tuned/delta/exactMatch" in metrics and "eval/base/tokenF1" in metrics
    if tuned is not None:
        assert metrics["eval/tuned/exactMatch"] == pytest.approx(tuned["scores"]["exactMatch"])
    assert "evaluation/scores.json" in {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}

    # The promotion pod: the promoted adapter logged and registered as a version.
    config = tmp_path / "promote.yaml"
    config.write_text(yaml.safe_dump({"modelPath": str(out / "adapter"), "adapter": True, "destination": str(tmp_path / "serving"),
                                      "tracking": tracking}))
    assert promote.main(["--config", str(config)]) == 0
    reported = json.loads(termination_log.read_text())["tracking"]
    version = client.get_model_version("tiny-animals", reported["modelVersion"])
    assert version.run_id == run.info.run_id and version.source.endswith("promoted/adapter")
    assert "registered as version" in json.loads(termination_log.read_text())["message"]


def test_a_retry_continues_the_same_run(mlflow_server, tiny_model_dir, dataset_file, tmp_path, termination_log, monkeypatch):
    monkeypatch.setenv("KUBETUNE_TRACKING_KEY", uuid.uuid4().hex)
    tracking = {"mlflow": {"uri": mlflow_server.url, "experiment": "retries", "logModel": False}}
    runs = []
    for attempt in (1, 2):
        config = train_config(tmp_path / f"train{attempt}.yaml", tiny_model_dir, dataset_file, tmp_path / f"out{attempt}", tracking)
        assert cli.main(["--config", str(config)]) == 0
        runs.append(json.loads(termination_log.read_text())["tracking"]["runId"])
    assert runs[0] == runs[1]
    client = mlflow_server.client()
    assert client.list_artifacts(runs[0]) == []  # logModel false
    assert len(client.search_runs([client.get_experiment_by_name("retries").experiment_id])) == 1


def test_a_server_that_is_down_never_fails_training(tiny_model_dir, dataset_file, tmp_path, termination_log, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    config = train_config(tmp_path / "train.yaml", tiny_model_dir, dataset_file, tmp_path / "out", {"mlflow": {"uri": dead_url()}})
    assert cli.main(["--config", str(config)]) == 0
    message = json.loads(termination_log.read_text())
    assert message["message"].startswith("lora training finished after 6 steps")
    assert set(message["tracking"]) == {"error"} and message["tracking"]["error"].startswith("starting the run: ")
    assert "onnect" in message["tracking"]["error"]  # connection refused, in the client's words
    assert (tmp_path / "out" / "adapter" / "adapter_model.safetensors").is_file()
