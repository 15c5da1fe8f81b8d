"""Models and data from the Hub and an object store, on the local control plane, with what a
runtime gives the pod: the shipped hf:// and s3:// examples run unchanged (the admin's runtimes
supply the model cache and the credentials), a revision is downloaded once per cache, and each
source failure ends Failed with its own reason, naming the URI, in one attempt.

The Hub is a local test mirror (tests/sources_fixtures.HubMirror, what HF_ENDPOINT exists for)
and the object store moto's standalone S3 server with IAM keys: pods on the local cluster are
processes on this machine, so both are reachable at 127.0.0.1.
"""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
import yaml

from kubectl_utils import ROOT, STATE, apply, get_json, kubectl, succeeded_condition, wait_final, wait_for
from sources_fixtures import HubMirror, MotoS3, read_files, smollm2_checkpoint, smollm2_hub_cache
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster
EXAMPLES = ROOT / "examples"
HUB_TOKEN = "hf_local_mirror_token"
TINY_REPO = "kubetune-tests/tiny"


def example(name: str) -> dict:
    return yaml.safe_load((EXAMPLES / name).read_text())


def shipped_runtime(name: str) -> dict:
    return next(doc for doc in yaml.safe_load_all((EXAMPLES / "runtimes.yaml").read_text()) if doc["metadata"]["name"] == name)


def secret(namespace: str, name: str, data: dict[str, str]) -> None:
    apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace},
           "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}})


def training_runtime(namespace: str, name: str, **spec) -> None:
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "TrainingRuntime", "metadata": {"name": name, "namespace": namespace},
           "spec": {"resources": {"defaults": {"gpu": 0}}, **spec}})


def bound_claim(namespace: str, name: str) -> Path:
    """A PersistentVolumeClaim, bound, and its directory on the node (the agent's hostPath PV)."""
    apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": namespace},
           "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "2Gi"}}}})
    wait_for(lambda: (get_json("pvc", name, "-n", namespace) or {}).get("status", {}).get("phase") == "Bound", 60, f"claim {name} bound")
    path = STATE / "pvcs" / namespace / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_example(namespace: str, name: str) -> dict:
    """Applies examples/<name> unchanged in `namespace` and waits for it; its output (a path
    relative to the pods' working directory, the repository root here) is removed after."""
    body = example(name)
    output = ROOT / body["spec"]["output"]["path"]
    shutil.rmtree(output, ignore_errors=True)
    try:
        kubectl("apply", "-n", namespace, "-f", str(EXAMPLES / name))
        return wait_final("ftj", namespace, body["metadata"]["name"], timeout=900)
    finally:
        shutil.rmtree(output, ignore_errors=True)


def tiny_job(name, namespace, model, rows, workdir, runtime, **spec):
    body = finetunejob(name, namespace, model, rows, workdir / name, **spec)
    body["spec"].pop("resources")  # the runtime's defaults
    body["spec"]["runtime"] = {"kind": "TrainingRuntime", "name": runtime}
    return body


def failed_with(namespace: str, name: str, reason: str, *words: str) -> None:
    ftj = wait_final("ftj", namespace, name)
    status, condition = ftj["status"], succeeded_condition(ftj)
    assert status["phase"] == "Failed" and condition["reason"] == reason, status
    assert all(word in condition["message"] for word in words), condition["message"]
    assert status["attempt"] == 1 and len(status["pods"]) == 1, "a source error is the user's: no retry"


@pytest.fixture
def cpu_runtime_with_cache(namespace):
    """The shipped `cpu` ClusterTrainingRuntime as an admin would complete it: a model cache
    claim, seeded with SmolLM2 as a download would have left it (no Hub here)."""
    cache = bound_claim(namespace, "model-cache")
    smollm2_hub_cache(cache, smollm2_checkpoint(STATE / "smollm2-checkpoint"))
    runtime = shipped_runtime("cpu")
    runtime["spec"]["modelCache"] = {"claimName": "model-cache"}
    runtime["spec"]["namespaces"] = [namespace]
    apply(runtime)
    yield
    kubectl("delete", "clustertrainingruntime", "cpu", "--ignore-not-found", check=False)


def test_hub_example_trains_from_the_model_cache(operator, namespace, cpu_runtime_with_cache):
    ftj = run_example(namespace, "finetunejob-hub.yaml")
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    model = status["lineage"]["model"]
    assert model["uri"] == "hf://HuggingFaceTB/SmolLM2-135M-Instruct"
    assert model["cacheHit"] is True and len(model["commit"]) == 40
    assert status["runtime"]["name"] == "cpu"


@pytest.fixture
def hub(namespace):
    """A Hub mirror holding the tiny model, demanding a token, and a TrainingRuntime `hub`
    pointing at it with the token from a Secret and a shared cache claim."""
    with HubMirror(token=HUB_TOKEN) as mirror:
        bound_claim(namespace, "hub-cache")
        secret(namespace, "hub-token", {"token": HUB_TOKEN})
        secret(namespace, "wrong-hub-token", {"token": "hf_not_the_token"})
        for name, token_secret in (("hub", "hub-token"), ("hub-wrong-token", "wrong-hub-token")):
            training_runtime(namespace, name, modelCache={"claimName": "hub-cache"},
                             hub={"endpoint": mirror.url, "tokenSecret": {"name": token_secret}})
        yield mirror


def evaluated(namespace: str, name: str) -> dict:
    """The FineTuneJob's status once its evaluation is over."""
    def done():
        status = (get_json("ftj", name, "-n", namespace) or {}).get("status") or {}
        return status if any(c["type"] == "Evaluated" and c["status"] != "Unknown" for c in status.get("conditions", [])) else None
    return wait_for(done, 300, f"{name}'s evaluation")


def test_a_revision_is_downloaded_once_per_cache(operator, namespace, hub, tiny_model_dir, rows_file, workdir):
    commit = hub.add(TINY_REPO, read_files(tiny_model_dir))
    # Both jobs evaluate base vs tuned on the same rows: the second reuses the base model's predictions.
    evaluation = {"dataset": {"path": str(rows_file), "promptTemplate": "Shout {{ word }}:", "referenceFields": ["upper"], "maxExamples": 6},
                  "metrics": ["exact_match"], "generation": {"maxNewTokens": 2}}
    apply(tiny_job("first", namespace, f"hf://{TINY_REPO}", rows_file, workdir, "hub", evaluation=evaluation))
    first = wait_final("ftj", namespace, "first")["status"]
    assert first["phase"] == "Succeeded", first
    assert first["lineage"]["model"]["commit"] == commit and first["lineage"]["model"]["cacheHit"] is False
    downloaded = len(hub.downloads())
    assert downloaded >= len(read_files(tiny_model_dir)), hub.requests
    repo_requests = [r for r in hub.requests if TINY_REPO in r[1]]
    assert repo_requests and all(auth == f"Bearer {HUB_TOKEN}" for _, _, auth in repo_requests), hub.requests

    first_evaluation = evaluated(namespace, "first")["evaluation"]
    assert first_evaluation["phase"] == "Succeeded" and "cachedModels" not in first_evaluation, first_evaluation

    # Another learning rate: another tuned model (the same training gives the same adapter, bit for bit: cached too).
    apply(tiny_job("second", namespace, f"hf://{TINY_REPO}@main", rows_file, workdir, "hub", evaluation=evaluation,
                   training={"learningRate": 0.02}))
    second = wait_final("ftj", namespace, "second")["status"]
    assert second["phase"] == "Succeeded", second
    assert second["lineage"]["model"]["commit"] == commit and second["lineage"]["model"]["cacheHit"] is True
    assert len(hub.downloads()) == downloaded, "the second job downloaded again"
    second_evaluation = evaluated(namespace, "second")["evaluation"]
    assert second_evaluation["phase"] == "Succeeded" and second_evaluation["cachedModels"] == ["base"], second_evaluation


def test_hub_failures_have_their_own_reasons(operator, namespace, hub, tiny_model_dir, rows_file, workdir):
    hub.add(TINY_REPO, read_files(tiny_model_dir))
    jobs = {"missing-repo": ("hub", f"hf://{TINY_REPO}-missing", "SourceNotFound"),
            "missing-revision": ("hub", f"hf://{TINY_REPO}@no-such-branch", "RevisionNotFound"),
            "wrong-token": ("hub-wrong-token", f"hf://{TINY_REPO}", "SourceUnauthorized")}
    for name, (runtime, uri, _) in jobs.items():
        apply(tiny_job(name, namespace, uri, rows_file, workdir, runtime))
    for name, (_, uri, reason) in jobs.items():
        failed_with(namespace, name, reason, uri)


@pytest.fixture
def s3(namespace):
    """moto's S3 server, its keys in a Secret, and the TrainingRuntimes that hand them (or
    wrong ones) to pods: `s3-cpu`, the one examples/finetunejob-s3.yaml names."""
    server = MotoS3().start()
    try:
        secret(namespace, "s3-credentials", server.env())
        secret(namespace, "wrong-s3-credentials", {**server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-key"})
        training_runtime(namespace, "s3-cpu", envFrom=[{"secretRef": {"name": "s3-credentials"}}])
        training_runtime(namespace, "s3-wrong-keys", envFrom=[{"secretRef": {"name": "wrong-s3-credentials"}}])
        yield server
    finally:
        server.stop()


def upload_dir(client, bucket: str, prefix: str, directory: Path) -> None:
    for name, content in read_files(directory).items():
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=content)


def test_s3_example_reads_from_and_uploads_to_the_store(operator, namespace, s3):
    client = s3.client()
    for bucket in ("kubetune-models", "kubetune-data", "kubetune-results"):
        client.create_bucket(Bucket=bucket)
    upload_dir(client, "kubetune-models", "SmolLM2-135M-Instruct", smollm2_checkpoint(STATE / "smollm2-checkpoint"))
    client.put_object(Bucket="kubetune-data", Key="instructions.jsonl", Body=(EXAMPLES / "data" / "instructions.jsonl").read_bytes())

    status = run_example(namespace, "finetunejob-s3.yaml")["status"]
    assert status["phase"] == "Succeeded", status
    assert status["artifacts"]["uri"] == "s3://kubetune-results/smollm2-s3"
    etags = {o["key"]: o["etag"] for o in status["lineage"]["model"]["objects"]}
    config = client.head_object(Bucket="kubetune-models", Key="SmolLM2-135M-Instruct/config.json")
    assert etags["config.json"] == config["ETag"].strip('"')
    (rows,) = [d for d in status["lineage"]["datasets"] if d["uri"] == "s3://kubetune-data/instructions.jsonl"]
    assert rows["etag"]
    uploaded = {o["Key"] for o in client.list_objects_v2(Bucket="kubetune-results")["Contents"]}
    assert {"smollm2-s3/training_summary.json", "smollm2-s3/README.md"} <= uploaded, uploaded
    assert any(key.endswith("adapter_model.safetensors") for key in uploaded), uploaded


def test_s3_failures_have_their_own_reasons(operator, namespace, s3, tiny_model_dir, rows_file, workdir):
    client = s3.client()
    client.create_bucket(Bucket="models")
    upload_dir(client, "models", "tiny", tiny_model_dir)
    jobs = {"missing-bucket": ("s3-cpu", "s3://no-such-bucket/tiny", "SourceNotFound"),
            "missing-prefix": ("s3-cpu", "s3://models/no-such-model", "SourceNotFound"),
            "wrong-keys": ("s3-wrong-keys", "s3://models/tiny", "SourceUnauthorized")}
    for name, (runtime, uri, _) in jobs.items():
        apply(tiny_job(name, namespace, uri, rows_file, workdir, runtime))
    for name, (_, uri, reason) in jobs.items():
        failed_with(namespace, name, reason, uri)
