"""promotion.serve: the InferenceService the operator builds for a promoted model (checked with
KServe's own Python models, in their own venv), what is refused at apply, and how KServe's
status (written by others) becomes the Serving condition."""
import json
import subprocess
from pathlib import Path

import pytest

import kubetune_api as api
from kubetune_api.serving import ServingStatus
from kubetune_operator import preflight, serving

ROOT = Path(__file__).resolve().parents[2]
SERVICES_PYTHON = ROOT / ".venv-services" / "bin" / "python"
EVALUATION = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}
VOLUMES = [{"name": "models", "claimName": "models-claim", "mountPath": "/models"}]
META = {"name": "demo", "namespace": "team-a", "uid": "uid-demo"}


def _spec(spec_dict, serve, destination="/models/promoted/v1", volumes=VOLUMES, **extra):
    return {**spec_dict, "volumes": volumes, "evaluation": EVALUATION,
            "promotion": {"destination": destination, "serve": serve, **extra.pop("promotion", {})}, **extra}


def _isvc(spec, name="demo"):
    parsed = preflight.validate(name, spec)
    return serving.inference_service({**META, "name": name}, parsed)


def _refused(spec, name="demo"):
    with pytest.raises(preflight.Invalid) as info:
        preflight.validate(name, spec)
    assert info.value.reason == "InvalidSpec"
    return str(info.value)


@pytest.fixture
def hf_merged(spec_dict):
    """Hugging Face runtime, a merged LoRA model promoted onto a PVC, owned by the job."""
    return _isvc(_spec(spec_dict, {"runtime": "huggingface"}, promotion={"mergeAdapter": True}))


@pytest.fixture
def s3_full_kept(spec_dict):
    """A full fine-tune promoted to S3, served by vLLM under its own name, left behind, with resources."""
    return _isvc(_spec(spec_dict, {"runtime": "vllm", "name": "chat-v2", "keep": True,
                                   "resources": {"gpu": 1, "cpu": "4", "memory": "24Gi"}},
                       destination="s3://models/promoted/", method="full"))


@pytest.fixture
def vllm_adapter(spec_dict):
    """An unmerged LoRA adapter on S3 over a Hub base model: a vLLM LoRA module."""
    return _isvc(_spec({**spec_dict, "model": {"path": "hf://acme/base-7b@v1.2"}}, {"runtime": "vllm"},
                       destination="s3://models/adapters/demo"))


def test_a_merged_model_on_a_claim_is_served_by_the_hf_runtime_and_owned(hf_merged):
    predictor = hf_merged["spec"]["predictor"]
    assert predictor == {"model": {"modelFormat": {"name": "huggingface"}, "args": ["--model_name=demo", "--backend=huggingface"],
                                   "storageUri": "pvc://models-claim/promoted/v1/model"}}
    meta = hf_merged["metadata"]
    assert (hf_merged["apiVersion"], hf_merged["kind"], meta["name"], meta["namespace"]) == (
        "serving.kserve.io/v1beta1", "InferenceService", "demo", "team-a")
    assert meta["ownerReferences"] == [{"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "name": "demo",
                                        "uid": "uid-demo", "controller": True, "blockOwnerDeletion": True}]
    assert meta["labels"] == {"kubetune.io/serving": "demo", "app.kubernetes.io/component": "serving",
                              "app.kubernetes.io/managed-by": "kubetune"}


def test_an_object_store_model_is_served_as_is_and_a_kept_one_has_no_owner(s3_full_kept):
    model = s3_full_kept["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://models/promoted/model"
    assert model["args"] == ["--model_name=chat-v2", "--backend=vllm"]
    assert model["resources"] == {"limits": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"},
                                  "requests": {"cpu": "4", "memory": "24Gi", "nvidia.com/gpu": "1"}}
    assert s3_full_kept["metadata"]["name"] == "chat-v2" and s3_full_kept["metadata"]["ownerReferences"] == []


def test_an_unmerged_adapter_is_a_vllm_lora_module_over_its_base(vllm_adapter, spec_dict):
    predictor = vllm_adapter["spec"]["predictor"]
    assert predictor["storageUris"] == [{"uri": "hf://acme/base-7b:v1.2", "mountPath": "/mnt/models/base"},
                                        {"uri": "s3://models/adapters/demo/adapter", "mountPath": "/mnt/models/adapter"}]
    assert "storageUri" not in predictor["model"]
    assert predictor["model"]["args"] == ["--model_name=demo-base", "--backend=vllm", "--model_dir=/mnt/models/base",
                                          "--enable-lora", "--lora-modules=demo=/mnt/models/adapter"]
    on_claim = _isvc(_spec({**spec_dict, "model": {"path": "/models/base"}}, {"runtime": "vllm"}))
    assert on_claim["spec"]["predictor"]["storageUris"] == [
        {"uri": "pvc://models-claim/base", "mountPath": "/mnt/models/base"},
        {"uri": "pvc://models-claim/promoted/v1/adapter", "mountPath": "/mnt/models/adapter"}]


def test_a_relative_destination_counts_only_on_a_volume_at_the_working_directory(spec_dict):
    workspace = [{"name": "ws", "claimName": "ws-claim", "mountPath": "/workspace"}]
    isvc = _isvc(_spec(spec_dict, {}, destination="runs/promoted", volumes=workspace, method="full"))
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://ws-claim/runs/promoted/model"


def test_kserves_own_models_accept_every_inference_service(hf_merged, s3_full_kept, vllm_adapter, tmp_path):
    """Each object read into kserve's V1beta1InferenceService and written back is unchanged: a
    field KServe does not know (misspelled, misplaced) would be dropped and fail this."""
    built = [hf_merged, s3_full_kept, vllm_adapter]
    (tmp_path / "in.json").write_text(json.dumps(built))
    subprocess.run([str(SERVICES_PYTHON), str(Path(__file__).with_name("kserve_roundtrip.py")),
                    str(tmp_path / "in.json"), str(tmp_path / "out.json")], check=True, timeout=120)
    back = json.loads((tmp_path / "out.json").read_text())
    for obj in back:  # V1beta1ModelSpec's constructor default, not a field the operator sets
        assert obj["spec"]["predictor"]["model"].pop("name") == ""
    assert back == built
    assert back[0]["spec"]["predictor"]["model"]["storageUri"] == "pvc://models-claim/promoted/v1/model"
    assert back[2]["spec"]["predictor"]["storageUris"][1]["uri"] == "s3://models/adapters/demo/adapter"


@pytest.mark.parametrize("serve, change, words", [
    ({"runtime": "huggingface"}, {}, "promotion.serve: runtime huggingface serves a full model, and this promotion is an unmerged "
                                     "LoRA adapter: set promotion.mergeAdapter, or runtime vllm"),
    ({}, {"destination": "runs/promoted", "volumes": []}, "promotion.destination: 'runs/promoted' is relative to the pod's working "
                                                           "directory, an emptyDir"),
    ({}, {"destination": "az://models/promoted"}, "promotion.destination: 'az://models/promoted': promotion.serve needs an s3:// or gs://"),
    ({"runtime": "vllm"}, {"method": "ia3"}, "promotion.serve: method ia3 promotes a ia3 adapter"),
    ({"runtime": "vllm"}, {"model": {"path": "/elsewhere/base"}}, "promotion.serve (the base model, model.path): '/elsewhere/base' is on none"),
    ({"runtime": "vllm"}, {"model": {"path": "s3://models/base.gguf"}}, "model.path 's3://models/base.gguf' is not one: set promotion.mergeAdapter"),
    ({"name": "Chat"}, {"method": "full"}, "promotion.serve.name"),
], ids=["hf-adapter", "emptydir", "azure", "ia3", "base-off-volume", "gguf-base", "bad-name"])
def test_what_kserve_could_not_serve_is_refused_at_apply(spec_dict, serve, change, words):
    change = dict(change)
    destination, volumes = change.pop("destination", "/models/promoted/v1"), change.pop("volumes", VOLUMES)
    assert words in _refused(_spec({**spec_dict, **change}, serve, destination=destination, volumes=volumes))


def test_a_job_name_kserve_cannot_take_needs_serve_name(spec_dict):
    assert "'demo.v1' is not a DNS-1035 label" in _refused(_spec(spec_dict, {}, method="full"), name="demo.v1")
    assert _isvc(_spec(spec_dict, {"name": "demo-v1"}, method="full"), name="demo.v1")["metadata"]["name"] == "demo-v1"


def test_readiness_mirrors_kserve_and_bounds_what_it_wrote():
    uri = "pvc://c/model"
    assert serving.readiness({}, "demo", uri) == (
        ("Unknown", "ServingPending", "InferenceService demo serves pvc://c/model; waiting for KServe to report it Ready"),
        {"name": "demo", "ready": False})
    ready = {"status": {"url": "http://demo.team-a.example.com", "conditions": [{"type": "Ready", "status": "True"}]}}
    assert serving.readiness(ready, "demo", uri) == (
        ("True", "Serving", "InferenceService demo serves pvc://c/model at http://demo.team-a.example.com"),
        {"name": "demo", "url": "http://demo.team-a.example.com", "ready": True})
    failed = {"status": {"url": "javascript:alert(1)", "conditions": [
        "junk", {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "x\u0007" * 5000}]}}
    (status, reason, message), summary = serving.readiness(failed, "demo", uri)
    assert (status, reason, summary) == ("False", "ServingFailed", {"name": "demo", "ready": False})
    assert message.startswith("InferenceService demo is not Ready: RevisionFailed: xxx") and len(message) < 600
    # Ready from before KServe saw the latest spec (observedGeneration behind) is not Ready.
    behind = {"metadata": {"generation": 3}, "status": {**ready["status"], "observedGeneration": 2}}
    assert serving.readiness(behind, "demo", uri)[0][1] == "ServingPending"
    assert serving.readiness({**behind, "status": {**behind["status"], "observedGeneration": 3}}, "demo", uri)[0][1] == "Serving"
    for url in ("ftp://host/x", "http://", "https://h/" + "a" * 3000, "http://h/ x", 42):
        assert serving.valid_url(url) is None
    ServingStatus.model_validate(summary)


def _existing(labels=None, owners=(), **model):
    return {"metadata": {"labels": labels if labels is not None else {"kubetune.io/serving": "old", "app.kubernetes.io/managed-by": "kubetune"},
                         "ownerReferences": list(owners)},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "huggingface"}, **model}}}}


def test_an_existing_inference_service_is_updated_only_when_kubetune_made_it_and_no_one_else_owns_it(hf_merged, vllm_adapter):
    assert serving.foreign(_existing(labels={}), "uid-demo") == "was not created by kubetune"
    other = {"kind": "FineTuneJob", "name": "other", "uid": "uid-other", "controller": True}
    assert serving.foreign(_existing(owners=[other]), "uid-demo") == "is owned by FineTuneJob other"
    kept = _existing(args=["--model_name=demo"], storageUri="pvc://old/model")
    assert serving.foreign(kept, "uid-demo") is None
    patch = serving.update_patch(kept, hf_merged)
    assert patch["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
    assert patch["spec"]["predictor"]["model"]["storageUri"] == "pvc://models-claim/promoted/v1/model"
    to_adapter = serving.update_patch(kept, vllm_adapter)["spec"]["predictor"]
    assert to_adapter["model"]["storageUri"] is None and len(to_adapter["storageUris"]) == 2  # null removes the old URI
    assert patch["metadata"]["annotations"] == hf_merged["metadata"]["annotations"]
    # KServe's defaults (resources, protocol) and the API server's quantities ("0.5" -> "500m") on
    # an object the operator made ask for no update: it carries the digest of what was set.
    defaulted = json.loads(json.dumps(hf_merged))
    defaulted["spec"]["predictor"]["model"].update(resources={"limits": {"cpu": "500m"}}, protocolVersion="v1")
    assert serving.update_patch(defaulted, hf_merged) is None
    assert serving.update_patch(defaulted, vllm_adapter) is not None  # another model: another digest


def test_serving_waits_for_the_promotion_and_stops_once_ready():
    promoted = {"conditions": [{"type": "Promoted", "status": "True"}]}
    spec = {"promotion": {"destination": "s3://b/p", "serve": {}}}
    assert serving.awaiting(spec, promoted)
    assert not serving.awaiting({"promotion": {"destination": "s3://b/p"}}, promoted)
    assert not serving.awaiting(spec, {"conditions": [{"type": "Promoted", "status": "Unknown"}]})
    assert not serving.awaiting(spec, {"conditions": [*promoted["conditions"], {"type": "Serving", "status": "True"}]})
    # Waiting on someone else (no KServe, a name taken, a refusal, KServe failing): looked at less often.
    stalled = {"conditions": [*promoted["conditions"], {"type": "Serving", "status": "False", "reason": "KServeNotInstalled"}]}
    pending = {"conditions": [*promoted["conditions"], {"type": "Serving", "status": "Unknown", "reason": "ServingPending"}]}
    assert serving.awaiting(spec, stalled) and serving.awaiting(spec, pending)
    looks = serving._Looks()
    assert looks.due("ns", "a", pending, 300) and looks.due("ns", "a", pending, 300)  # pending: every tick
    assert looks.due("ns", "a", stalled, 300) and not looks.due("ns", "a", stalled, 300)  # stalled: once a while
    assert looks.due("ns", "b", stalled, 300) and looks.due("ns", "a", stalled, 0)
    assert api.CONDITION_SERVING == "Serving"
