"""FineTuneJob end to end on the local control plane: kubectl -> API server -> operator ->
Job -> pod (node agent) -> kubetune-train -> status, events and Prometheus."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from kubectl_utils import (apply, events_for, get_json, in_workdir, jobs_in, kubectl, succeeded_condition, wait_final,
                           wait_for, webhooks_off)

pytestmark = pytest.mark.cluster

def finetunejob(name, namespace, model_path, rows, output, **spec):
    body = {
        "model": {"path": str(model_path)},
        "dataset": {"path": str(rows), "promptTemplate": "Shout {{ word }}:", "completionField": "upper",
                    "validationRatio": 0.2, "testRatio": 0.2, "maxLength": 32},
        "method": "lora",
        "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
        "training": {"maxSteps": 4, "batchSize": 4, "learningRate": 0.01, "evalEverySteps": 2},
        "output": {"path": in_workdir(output)},
        "resources": {"gpu": 1},
    }
    for key, value in spec.items():
        body[key] = {**body[key], **value} if isinstance(value, dict) and isinstance(body.get(key), dict) else value
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": namespace}, "spec": body}


def test_lora_job_succeeds_end_to_end(operator, namespace, tiny_model_dir, rows_file, workdir):
    output = workdir / "out"
    apply(finetunejob("shout", namespace, tiny_model_dir, rows_file, output))
    ftj = wait_final("ftj", namespace, "shout")

    status = ftj["status"]
    condition = succeeded_condition(ftj)
    assert status["phase"] == "Succeeded", status
    assert (condition["status"], condition["reason"]) == ("True", "Completed")
    assert status["observedGeneration"] == ftj["metadata"]["generation"]
    assert status["startTime"] <= status["completionTime"]
    assert status["progress"]["step"] == status["progress"]["totalSteps"] == 4
    assert status["metrics"]["trainLoss"] > 0 and status["metrics"]["testLoss"] > 0
    model_path = Path(status["artifacts"]["modelPath"])
    assert (model_path / "adapter_config.json").exists() and (model_path / "adapter_model.safetensors").exists()
    assert (output / "training_summary.json").exists()

    (job,) = jobs_in(namespace)
    assert job["metadata"]["ownerReferences"][0]["uid"] == ftj["metadata"]["uid"]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    events = events_for(namespace, "shout")
    assert ("Normal", "JobCreated") in events and ("Normal", "Completed") in events

    table = kubectl("get", "ftj", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "METHOD", "PROGRESS", "LOSS", "AGE"]
    assert table[1].split()[:4] == ["shout", "Succeeded", "lora", "100"]

    scraped = operator.metrics()
    assert f'kubetune_finetunejob_progress_ratio{{name="shout",namespace="{namespace}"}} 1.0' in scraped
    assert f'kubetune_finetunejob_loss{{name="shout",namespace="{namespace}",split="train"}}' in scraped
    assert 'kubetune_job_duration_seconds_count{kind="FineTuneJob",phase="Succeeded"}' in scraped

    # Deleting the FineTuneJob garbage-collects everything it owns.
    kubectl("delete", "ftj", "shout", "-n", namespace)
    for kind in ("job", "configmap"):
        wait_for(lambda: get_json(kind, "shout-train", "-n", namespace) is None, 60, f"{kind} to be collected")


@pytest.mark.parametrize("field, value, expected", [
    ("method", "sgd", ["spec.method", "Unsupported value"]),
    ("lora", {"r": 0}, ["spec.lora.r", "greater than or equal to 1"]),
    ("training", {"batchSize": "four"}, ["spec.training.batchSize", "integer"]),
    # Bounds and names (tests/api/test_bounds.py): refused by the API server, not by a 422 on the Job later.
    ("queueName", "a b/c", ["spec.queueName", "should match"]),
    ("queueName", "q" * 10_000, ["spec.queueName", "63"]),
    ("resources", {"cpu": "-1"}, ["spec.resources.cpu", "should match"]),
    ("training", {"maxSteps": 10**9}, ["spec.training.maxSteps", "less than or equal to 10000000"]),
])
def test_schema_refuses_bad_specs(namespace, tiny_model_dir, rows_file, workdir, field, value, expected):
    result = apply(finetunejob("bad", namespace, tiny_model_dir, rows_file, workdir, **{field: value}), check=False)
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert get_json("ftj", "bad", "-n", namespace) is None


def test_required_fields_are_enforced(namespace):
    bad = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "empty", "namespace": namespace},
           "spec": {"method": "lora"}}
    result = apply(bad, check=False)
    assert result.returncode != 0
    for field in ("model", "dataset", "output"):  # kubectl's validation against the CRD's schema
        assert f'missing required field "{field}"' in result.stderr, result.stderr
    assert get_json("ftj", "empty", "-n", namespace) is None


@pytest.mark.parametrize("change, words", [
    ({"output_path": "../../etc"}, ["spec.output.path", "leaves the working directory"]),
    ({"output_path": "/etc"}, ["spec.output.path", "outside the job's writable volumes"]),
    ({"dataset": {"validationRatio": 0.6, "testRatio": 0.5}}, ["dataset.validationRatio + dataset.testRatio"]),
])
def test_spec_rules_fail_without_a_pod(operator, namespace, tiny_model_dir, rows_file, workdir, change, words):
    """The admission webhook refuses these at apply (test_admission.py); past it (an operator
    that was down, with failurePolicy Ignore), the operator fails them itself."""
    body = finetunejob("wrong", namespace, tiny_model_dir, rows_file, workdir / "out", **change)
    if "output_path" in change:
        body["spec"]["output"] = {"path": body["spec"].pop("output_path")}
    with webhooks_off():
        apply(body)
    ftj = wait_final("ftj", namespace, "wrong", timeout=60)
    condition = succeeded_condition(ftj)
    assert ftj["status"]["phase"] == "Failed"
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSpec")
    for word in words:
        assert word in condition["message"]
    assert ("Warning", "InvalidSpec") in events_for(namespace, "wrong")
    assert jobs_in(namespace) == [] and get_json("pods", "-n", namespace)["items"] == []


@pytest.mark.parametrize("change, reason, words", [
    ({"dataset": {"path": "/nonexistent/rows.jsonl"}}, "InvalidDataset", ["/nonexistent/rows.jsonl"]),
    ({"dataset": {"promptTemplate": "Shout {{ colour }}:"}}, "InvalidDataset", ["colour"]),
    ({"model": {"path": "/nonexistent/model"}}, "InvalidModel", ["model.path", "/nonexistent/model"]),
])
def test_pod_check_phase_fails_bad_files_once(operator, namespace, tiny_model_dir, rows_file, workdir, change, reason, words):
    """Files are checked by the pod (its identity, its volumes), before any model loads; a
    user error is not retried although the Job allows retries."""
    apply(finetunejob("wrong", namespace, tiny_model_dir, rows_file, workdir / "out", backoffLimit=3, **change))
    ftj = wait_final("ftj", namespace, "wrong", timeout=120)
    condition = succeeded_condition(ftj)
    assert (ftj["status"]["phase"], condition["status"], condition["reason"]) == ("Failed", "False", reason)
    for word in words:
        assert word in condition["message"]
    assert ("Warning", reason) in events_for(namespace, "wrong")
    # One attempt, one pod: the Job never retries by itself (backoffLimit 0) and the operator
    # starts no second attempt for a user error.
    (job,) = jobs_in(namespace)
    assert job["spec"]["backoffLimit"] == 0 and ftj["status"].get("retries", 0) == 0
    time.sleep(5)
    assert len(get_json("pods", "-n", namespace)["items"]) == 1 and len(jobs_in(namespace)) == 1
    assert not (workdir / "out").exists()


def test_hostile_template_runs_nothing_anywhere(operator, namespace, tiny_model_dir, rows_file, workdir, tmp_path):
    proof = tmp_path / "proof"
    template = ("{{ cycler.__init__.__globals__.os.popen('id > " + str(proof) + "').read() }}"
                "{% for i in range(999999999) %}x{% endfor %}{{ word }}")
    apply(finetunejob("hostile", namespace, tiny_model_dir, rows_file, workdir / "out", dataset={"promptTemplate": template}))
    ftj = wait_final("ftj", namespace, "hostile", timeout=120)
    condition = succeeded_condition(ftj)
    assert (ftj["status"]["phase"], condition["reason"]) == ("Failed", "InvalidDataset")
    assert "dataset.promptTemplate" in condition["message"] and "unsafe" in condition["message"]
    assert not proof.exists()
    assert operator.rss_bytes() < 500 * 2**20  # the operator never rendered it


def test_trainer_failure_reaches_the_condition(operator, namespace, rows_file, tmp_path, workdir):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    apply(finetunejob("broken", namespace, broken, rows_file, workdir / "out"))
    ftj = wait_final("ftj", namespace, "broken")
    condition = succeeded_condition(ftj)
    assert ftj["status"]["phase"] == "Failed"
    # The trainer's own error and reason, from its termination message, with its exit code.
    assert (condition["status"], condition["reason"]) == ("False", "InvalidModel")
    assert condition["message"].startswith("the trainer exited with code 2: ModelSourceError: model.path")
    assert str(broken) in condition["message"]
    assert ("Warning", "InvalidModel") in events_for(namespace, "broken")


def test_unschedulable_job_says_why(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("greedy", namespace, tiny_model_dir, rows_file, workdir, resources={"gpu": 64}))

    def unschedulable():
        status = (get_json("ftj", "greedy", "-n", namespace).get("status") or {})
        return status if status.get("phase") == "Pending" and "nvidia.com/gpu" in (status.get("message") or "") else None
    status = wait_for(unschedulable, 60, "the Unschedulable reason")
    assert succeeded_condition({"status": status})["reason"] == "Unschedulable"
    assert succeeded_condition({"status": status})["status"] == "Unknown"


def test_operator_restart_mid_job_keeps_one_job(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("restart", namespace, tiny_model_dir, rows_file, workdir / "out", training={"maxSteps": 30}))
    wait_for(lambda: (get_json("ftj", "restart", "-n", namespace).get("status") or {}).get("phase") == "Running",
             120, "the job to run")
    operator.kill()
    try:
        # While the operator is away the trainer keeps going; its report waits in its log.
        wait_for(lambda: "kubetune-report" in kubectl("logs", "-n", namespace, "-l", "kubetune.io/finetunejob=restart",
                                                      check=False).stdout, 120, "the trainer to report progress")
    finally:
        operator.start()
    ftj = wait_final("ftj", namespace, "restart")
    assert ftj["status"]["phase"] == "Succeeded" and succeeded_condition(ftj)["reason"] == "Completed"
    assert len(jobs_in(namespace)) == 1
    assert len(get_json("pods", "-n", namespace)["items"]) == 1


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def example_runtimes(namespace):
    """The runtimes examples name, as the admin would have made them (the webhook refuses a job
    whose runtime does not exist): examples/runtimes.yaml's, and an empty TrainingRuntime of any
    other name in the namespace. Returns a function that makes those of one manifest."""
    made = []
    shipped = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all((EXAMPLES / "runtimes.yaml").read_text())}

    def make(path):
        for doc in yaml.safe_load_all(path.read_text()):
            ref = (doc.get("spec") or {}).get("runtime")
            if not ref:
                continue
            if ref.get("kind") == "TrainingRuntime":
                apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "TrainingRuntime",
                       "metadata": {"name": ref["name"], "namespace": namespace}, "spec": {}})
            elif get_json("clustertrainingruntime", ref["name"]) is None:
                apply(shipped[ref["name"]])
                made.append(ref["name"])
    yield make
    for name in made:
        kubectl("delete", "clustertrainingruntime", name, "--ignore-not-found", check=False)


@pytest.mark.parametrize("manifest", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_every_example_is_accepted_by_the_api_server(operator, namespace, example_runtimes, manifest):
    path = EXAMPLES / manifest
    example_runtimes(path)
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", str(path), check=False)
    assert result.returncode == 0, result.stderr
    assert "(server dry run)" in result.stdout
