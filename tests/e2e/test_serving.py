"""promotion.serve on the local control plane, with one training run: without KServe the job
Succeeds and its Serving condition names the missing API; once an InferenceService API is
served, the operator creates the InferenceService for the promoted model (on the job's PVC),
owned by the job, mirrors the readiness KServe would write, and garbage collection removes it
with the job."""
from __future__ import annotations

import json

import pytest

from kubectl_utils import apply, condition, get_json, in_workdir, kubectl, wait_final, wait_for
from test_sources import bound_claim
from tinymodels import TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster
CRD_NAME = "inferenceservices.serving.kserve.io"
ISVC = "inferenceservices.serving.kserve.io"
MISSING = "serving.kserve.io/v1beta1 InferenceService"

# A STAND-IN for KServe's CRD, which cannot be downloaded here (the kserve wheel ships no CRD
# YAML): the same group, version, kind and names, a status subresource, and an open schema.
# It lets the API server store what the operator creates; no KServe controller acts on it, so
# the test writes the status KServe would.
STAND_IN_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": CRD_NAME},
    "spec": {"group": "serving.kserve.io", "scope": "Namespaced",
             "names": {"plural": "inferenceservices", "singular": "inferenceservice", "kind": "InferenceService", "shortNames": ["isvc"]},
             "versions": [{"name": "v1beta1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]},
}


@pytest.fixture
def no_kserve(kubeconfig):
    """No InferenceService API when the test starts; the stand-in CRD removed after."""
    kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true")
    yield
    kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=false", check=False)


def install_stand_in_crd() -> None:
    apply(STAND_IN_CRD)
    wait_for(lambda: any(c["type"] == "Established" and c["status"] == "True"
                         for c in ((get_json("crd", CRD_NAME) or {}).get("status") or {}).get("conditions", [])),
             60, "the stand-in InferenceService CRD to be Established")


def serving_condition(namespace: str, name: str, status: str) -> dict:
    def found():
        ftj = get_json("ftj", name, "-n", namespace) or {}
        return ftj if any(c["type"] == "Serving" and c["status"] == status for c in (ftj.get("status") or {}).get("conditions", [])) else None
    return wait_for(found, 120, f"Serving {status}")


def test_serving_hands_the_promoted_model_to_kserve_when_it_is_there(operator, namespace, no_kserve, tiny_model_dir, workdir, tmp_path):
    data = write_jsonl(tmp_path / "animals.jsonl", make_rows(16))
    claim = bound_claim(namespace, "models")
    spec = {
        "model": {"path": str(tiny_model_dir)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.2, "testRatio": 0.2},
        "method": "lora", "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 2, "batchSize": 4, "learningRate": 0.01},
        "output": {"path": in_workdir(workdir / "out")},
        "resources": {"gpu": 0},
        "volumes": [{"name": "models", "claimName": "models", "mountPath": "/models"}],
        "evaluation": {"dataset": {"path": str(data), "promptTemplate": TEMPLATE, "referenceFields": ["answer"], "maxExamples": 4},
                       "metrics": ["rouge"], "generation": {"maxNewTokens": 2}},
        "promotion": {"rules": [{"metric": "rougeL", "minScore": 0.0}], "destination": "/models/promoted", "mergeAdapter": True,
                      "serve": {"runtime": "huggingface"}},
    }
    apply({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "served", "namespace": namespace}, "spec": spec})
    assert wait_final("ftj", namespace, "served")["status"]["phase"] == "Succeeded"

    # Without KServe: Succeeded all the same, and the condition names the API that is missing.
    ftj = serving_condition(namespace, "served", "False")
    absent = condition(ftj, "Serving")
    assert absent["reason"] == "KServeNotInstalled" and MISSING in absent["message"], absent
    assert ftj["status"]["phase"] == "Succeeded" and condition(ftj, "Promoted")["status"] == "True"
    assert (claim / "promoted" / "model" / "config.json").exists()

    # KServe's API appears: the operator finds it and creates the InferenceService, owned by the job.
    install_stand_in_crd()
    isvc = wait_for(lambda: get_json(ISVC, "served", "-n", namespace), 120, "the InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == "pvc://models/promoted/model" and model["modelFormat"] == {"name": "huggingface"}
    assert "--backend=huggingface" in model["args"]
    (owner,) = isvc["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("FineTuneJob", "served", ftj["metadata"]["uid"], True)
    pending = condition(serving_condition(namespace, "served", "Unknown"), "Serving")
    assert pending["reason"] == "ServingPending", pending

    # KServe reports it Ready (written here through the status subresource, as KServe would).
    url = f"http://served.{namespace}.example.com"
    kubectl("patch", ISVC, "served", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"url": url, "conditions": [{"type": "Ready", "status": "True"}]}}))
    ftj = serving_condition(namespace, "served", "True")
    assert condition(ftj, "Serving")["reason"] == "Serving"
    assert ftj["status"]["serving"] == {"name": "served", "url": url, "ready": True}

    # Owned: it goes with the FineTuneJob; the promoted model on the claim stays.
    kubectl("delete", "ftj", "served", "-n", namespace)
    wait_for(lambda: get_json(ISVC, "served", "-n", namespace) is None, 120, "the InferenceService to be garbage-collected")
    assert (claim / "promoted" / "model" / "config.json").exists()
