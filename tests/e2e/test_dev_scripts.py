"""The scripts behind `make demo` on a fresh machine: CRDs installed on a cluster that has never
seen them, and a demo run again after an interrupted one starting clean."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest
import yaml

from kubectl_utils import ADMIN_KUBECONFIG, ROOT, get_json, in_workdir, kubectl, wait_for
from tinymodels import TEMPLATE, make_rows, write_jsonl

pytestmark = pytest.mark.cluster


def crd(plural: str) -> dict:
    group = "scripts.test.kubetune.io"
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": plural, "singular": plural[:-1], "kind": plural[:-1].capitalize()},
                     "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}]}}


def test_install_crds_waits_for_brand_new_crds_to_be_established(tmp_path):
    """A CRD the API server has never seen has no status for a moment after the apply; the
    install must wait through that (kubectl wait --for=condition=Established fails on it)."""
    plurals = [f"widgets{uuid.uuid4().hex[:8]}s" for _ in range(4)]
    for plural in plurals:
        (tmp_path / f"{plural}.json").write_text(json.dumps(crd(plural)))
    try:
        result = subprocess.run(["bash", str(ROOT / "hack/operator.sh"), "install-crds", str(tmp_path)],
                                env={**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        for plural in plurals:
            status = kubectl("get", "crd", f"{plural}.scripts.test.kubetune.io", "-o",
                             "jsonpath={.status.conditions[?(@.type==\"Established\")].status}").stdout
            assert status == "True", plural
    finally:
        kubectl("delete", "-f", str(tmp_path), "--wait=false", check=False)


def test_demo_clean_only_removes_the_job_its_evaljobs_and_pods_before_the_outputs(
        operator, namespace, tiny_model_dir, workdir, tmp_path, tmp_path_factory):
    """What `make demo` does first, after an interrupted run: here the run is cut off while the
    evaluation's pods are writing into the output directory."""
    rows = write_jsonl(tmp_path_factory.mktemp("demo-clean") / "rows.jsonl", make_rows(48))
    output = workdir / "out"
    spec = {
        "model": {"path": str(tiny_model_dir)},
        "dataset": {"path": str(rows), "promptTemplate": TEMPLATE, "completionField": "answer", "validationRatio": 0.1, "testRatio": 0.1},
        "method": "lora", "lora": {"r": 4, "alpha": 8},
        "training": {"maxSteps": 2, "batchSize": 4},
        "output": {"path": in_workdir(output)},
        "resources": {"gpu": 1},
        "evaluation": {"dataset": {"path": str(rows), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
                       "metrics": ["rouge"], "generation": {"maxNewTokens": 256, "batchSize": 1}},
    }
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(yaml.safe_dump({"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
                                        "metadata": {"name": "demo", "namespace": namespace}, "spec": spec}))
    kubectl("apply", "-f", str(manifest))

    def evaluation_running():
        pods = get_json("pods", "-n", namespace, "-l", "kubetune.io/evaljob")["items"]
        return [p for p in pods if p["status"].get("phase") == "Running"]
    wait_for(evaluation_running, 300, "an evaluation pod of the job to run")
    assert output.exists()

    result = subprocess.run(["bash", str(ROOT / "hack/demo.sh"), "--clean-only", str(manifest)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert get_json("ftj", "-n", namespace)["items"] == []
    assert get_json("evj", "-n", namespace)["items"] == []
    assert get_json("pods", "-n", namespace)["items"] == []
    assert not output.exists()
    time.sleep(3)  # nothing of the old run is left to write there again
    assert not output.exists()
