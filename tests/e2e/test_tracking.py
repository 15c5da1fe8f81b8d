"""spec.tracking end to end on the local control plane, against a real MLflow server the test
starts (pods are processes on this machine, so 127.0.0.1 reaches it): training, evaluation and
promotion leave one run with params, a loss curve, eval scores and a registered version; a
server that is down leaves the job Succeeded with Tracked False."""
from __future__ import annotations

import pytest

from kubectl_utils import apply, condition, get_json, in_workdir, wait_final, wait_for
from tinymodels import TEMPLATE, make_rows, write_jsonl
from tracking_fixtures import MlflowServer, dead_url

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-e2e")).start()
    yield server
    server.stop()


def tracked_job(namespace, name, model, data, workdir, uri, promote=True):
    spec = {
        "model": {"path": str(model)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.2, "testRatio": 0.2},
        "method": "lora", "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01, "logEverySteps": 1},
        "output": {"path": in_workdir(workdir / name)},
        "tracking": {"mlflow": {"uri": uri, **({"registeredModel": f"{namespace}-animals"} if promote else {})}},
    }
    if promote:
        spec["evaluation"] = {"dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 6},
                              "metrics": ["exact_match"], "generation": {"maxNewTokens": 3}}
        spec["promotion"] = {"rules": [{"metric": "exactMatch", "minScore": 0.0}], "destination": in_workdir(workdir / f"{name}-promoted")}
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace}, "spec": spec})
    ftj = wait_final("ftj", namespace, name)
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    return ftj


def test_a_tracked_job_leaves_a_run_with_params_curve_scores_and_a_version(operator, namespace, tiny_model_dir, workdir, tmp_path,
                                                                          mlflow_server):
    data = write_jsonl(tmp_path / "tracked.jsonl", make_rows(24))
    tracked_job(namespace, "tracked", tiny_model_dir, data, workdir, mlflow_server.url)

    def registered():
        ftj = get_json("ftj", "tracked", "-n", namespace)
        return ftj if (ftj["status"].get("tracking") or {}).get("modelVersion") else None
    ftj = wait_for(registered, 300, "the promotion to register a version")
    status = ftj["status"]["tracking"]
    assert status["url"] == f"{mlflow_server.url}/#/experiments/{status['experimentId']}/runs/{status['runId']}"
    tracked = condition(ftj, "Tracked")
    assert (tracked["status"], tracked["reason"]) == ("True", "Tracked") and "version" in tracked["message"]
    assert condition(ftj, "Promoted")["status"] == "True"

    client = mlflow_server.client()
    run = client.get_run(status["runId"])
    assert client.get_experiment(run.info.experiment_id).name == namespace
    assert run.data.tags["kubetune.io/job-uid"] == ftj["metadata"]["uid"]
    assert run.data.params["method"] == "lora" and run.data.params["lineage.configHash"] == ftj["status"]["lineage"]["configHash"]
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "train_loss")) == [1, 2, 3, 4]
    evaluation = ftj["status"]["evaluation"]
    assert run.data.metrics["eval/tuned/exactMatch"] == pytest.approx(evaluation["scores"]["exactMatch"], abs=1e-4)
    assert run.data.metrics["eval/tuned/delta/exactMatch"] == pytest.approx(evaluation["delta"]["exactMatch"], abs=1e-4)
    version = client.get_model_version(status["registeredModel"], status["modelVersion"])
    assert status["registeredModel"] == f"{namespace}-animals" and version.run_id == run.info.run_id


def test_a_server_that_is_down_leaves_the_job_succeeded_and_says_why(operator, namespace, tiny_model_dir, workdir, tmp_path):
    data = write_jsonl(tmp_path / "untracked.jsonl", make_rows(24))
    uri = dead_url()
    ftj = tracked_job(namespace, "untracked", tiny_model_dir, data, workdir, uri, promote=False)
    tracked = condition(ftj, "Tracked")
    assert (tracked["status"], tracked["reason"]) == ("False", "TrackingFailed"), tracked
    assert tracked["message"].startswith(f"tracking to {uri} failed (the job goes on without it): starting the run")
    assert "tracking" not in ftj["status"] and condition(ftj)["status"] == "True"
