"""charts/kubetune on the local cluster with the real Helm (helm-sdkpy): server-side dry-run of
every rendered object, then install -> the chart's operator pod reconciles a FineTuneJob to
Succeeded -> upgrade -> uninstall.

On the local cluster the node agent runs the chart's Deployment pod as a local process from
.venv-operator (image repository ending in /operator), with a kubeconfig holding the chart
ServiceAccount's token: the operator has exactly the chart's RBAC. The agent ignores probes and
securityContext (readOnlyRootFilesystem, runAsUser...): those are checked in test_chart.py as
rendered, not enforced here. Pods share the host network, so the operator gets free ports.
"""
from __future__ import annotations

import gc
import json
import shutil
import subprocess
import uuid
import urllib.request

import pytest
import yaml

from conftest import CHART, MONITORING, ROOT, TOGGLES, helm, render, values_file

from kubectl_utils import (E2E_OUTPUTS, OperatorProcess, free_port, get_json, in_workdir, kubectl, wait_final,
                           wait_for)

pytestmark = pytest.mark.cluster

# prometheus-operator's and cert-manager's CRDs are not installed on the local cluster, so the
# API server cannot dry-run these kinds; test_chart.py checks what they render.
NO_CRD_HERE = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "Certificate", "Issuer"}


def dry_run(objects: list[dict]) -> str:
    result = kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(objects))
    return result.stdout


def test_server_side_dry_run_of_every_rendered_object(kubeconfig):
    # A dry run of namespaced objects needs their namespace (helm install --create-namespace
    # and manifests/namespace.yaml make it); a fresh cluster may not have it yet.
    kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    every_toggle = {}
    for values, _ in TOGGLES.values():
        for key, value in values.items():
            every_toggle[key] = {**every_toggle.get(key, {}), **value} if isinstance(value, dict) else value
    renders = [render(), render({**every_toggle, "watchNamespaces": ["default", "kube-public"]}, (MONITORING,))]
    for objects in renders:
        checked = [o for o in objects if o["kind"] not in NO_CRD_HERE]
        out = dry_run(checked)
        assert out.count("(server dry run)") == len(checked), out
    assert {o["kind"] for o in renders[1]} >= {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy",
                                               "Role", "RoleBinding"}
    # The kustomize base, as `kubectl apply -k manifests/` sends it (with cert-manager installed).
    base = list(yaml.safe_load_all(kubectl("kustomize", str(ROOT / "manifests")).stdout))
    assert {o["kind"] for o in base} >= {"Certificate", "Issuer", "ValidatingWebhookConfiguration"}
    checked = [o for o in base if o["kind"] not in NO_CRD_HERE]
    assert dry_run(checked).count("(server dry run)") == len(checked)


def _pause_other_operators() -> list:
    """This pytest process's own operators (the e2e session fixture's OperatorProcess, when an
    e2e test already started it) and the demo one (hack/operator.sh), which are cluster-wide and
    would race the chart's operator for the test's FineTuneJob. Returns those to restart."""
    subprocess.run(["bash", str(ROOT / "hack" / "operator.sh"), "stop"], check=True, capture_output=True)
    running = [o for o in gc.get_objects() if type(o) is OperatorProcess
               and o.process is not None and o.process.poll() is None]
    for process in running:
        process.stop()
    return running


def _pod_log(namespace: str) -> str:
    logs = sorted((ROOT / ".cluster" / "pods" / namespace).glob("*/operator*.log"))
    return "\n".join(f"== {p}\n{p.read_text()[-4000:]}" for p in logs)


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


def _rows(path):
    words = ["red", "green", "blue", "cyan", "black", "white", "pink", "gold"]
    path.write_text("".join(json.dumps({"word": w, "upper": w.upper()}) + "\n" for w in words * 5))
    return path


def test_install_run_a_finetunejob_upgrade_uninstall(kubeconfig, tiny_model_dir, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    release, system, watched = f"ktchart-{suffix}", f"ktchart-{suffix}-system", f"ktchart-{suffix}"
    metrics_port, health_port, webhook_port = free_port(), free_port(), free_port()
    # The pod shares the host's network, where the API server runs: it calls https://127.0.0.1:<port>.
    # The chart's cpu runtime (a post-install hook), which the FineTuneJob names: the operator reads
    # it with the chart's RBAC (get on clustertrainingruntimes, with watchNamespaces too).
    values = {"watchNamespaces": [watched], "workers": 2, "metrics": {"port": metrics_port},
              "health": {"port": health_port}, "webhook": {"port": webhook_port, "host": "127.0.0.1"},
              "runtimes": {"cpu": {"enabled": True, "namespaces": [watched]}}}
    outputs = E2E_OUTPUTS / watched
    kubectl("create", "namespace", watched)
    paused = _pause_other_operators()
    installed = False
    try:
        # take_ownership: the CRDs may already exist, applied by kubectl (hack/operator.sh).
        helm("install", release, str(CHART), "-n", system, "--create-namespace", "--take-ownership",
             "-f", values_file(values), "--timeout", "180")
        installed = True
        deploy = get_json("deployment", f"{release}-operator", "-n", system)
        assert deploy["status"].get("readyReplicas") == 1, deploy["status"]
        (pod,) = get_json("pods", "-n", system)["items"]
        assert pod["spec"]["serviceAccountName"] == f"{release}-operator"
        assert pod["status"]["phase"] == "Running"
        wait_for(lambda: _serving(f"http://127.0.0.1:{metrics_port}/metrics")
                 and _serving(f"http://127.0.0.1:{health_port}/healthz"), 90,
                 "the chart's operator to serve /metrics and /healthz")

        ftj = {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
               "metadata": {"name": "first", "namespace": watched},
               "spec": {"model": {"path": str(tiny_model_dir)},
                        "dataset": {"path": str(_rows(tmp_path / "pairs.jsonl")), "promptTemplate": "Shout {{ word }}:",
                                    "completionField": "upper", "validationRatio": 0.2, "testRatio": 0.2,
                                    "maxLength": 32},
                        "method": "lora", "lora": {"r": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]},
                        "training": {"maxSteps": 2, "batchSize": 4, "learningRate": 0.01},
                        "output": {"path": in_workdir(outputs / "out")}, "runtime": {"name": "cpu"}}}
        assert get_json("clustertrainingruntime", "cpu")["spec"]["namespaces"] == [watched]
        wait_for(lambda: (get_json("validatingwebhookconfiguration", f"{release}-operator") or {}).get("webhooks"), 60,
                 "the chart's operator to set its webhooks")
        bad = {**ftj, "metadata": {"name": "bad", "namespace": watched},
               "spec": {**ftj["spec"], "output": {"path": "../../etc"}}}
        refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
        assert refused.returncode != 0 and "spec.output.path" in refused.stderr, refused.stderr
        kubectl("apply", "-f", "-", stdin=yaml.safe_dump(ftj))
        done = wait_final("ftj", watched, "first", timeout=300)
        assert done["status"]["phase"] == "Succeeded", (done["status"], _pod_log(system))
        assert done["status"]["runtime"]["name"] == "cpu"
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            assert f'kubetune_finetunejob_progress_ratio{{name="first",namespace="{watched}"}} 1.0' in response.read().decode()

        # Upgrade with changed values: the Deployment follows.
        helm("upgrade", release, str(CHART), "-n", system, "--timeout", "180",
             "-f", values_file({**values, "workers": 3, "trainerImage": "ghcr.io/kubetune/trainer:0.1.1"}))
        args = get_json("deployment", f"{release}-operator", "-n", system)["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "--workers=3" in args and "--trainer-image=ghcr.io/kubetune/trainer:0.1.1" in args, args
        status = json.loads(helm("status", release, "-n", system).stdout)
        assert status.get("version", status.get("revision")) == 2, status

        helm("uninstall", release, "-n", system, "--timeout", "120")
        installed = False
        for args in (("deployment", f"{release}-operator", "-n", system),
                     ("serviceaccount", f"{release}-operator", "-n", system),
                     ("service", f"{release}-operator-metrics", "-n", system),
                     ("role", f"{release}-operator", "-n", watched),
                     ("rolebinding", f"{release}-operator", "-n", watched),
                     ("clusterrole", f"{release}-operator"), ("clusterrolebinding", f"{release}-operator"),
                     ("validatingwebhookconfiguration", f"{release}-operator")):
            assert get_json(*args) is None, f"{args} survived helm uninstall"
        wait_for(lambda: not get_json("pods", "-n", system)["items"], 60, "the operator pod to go")
        for crd in ("finetunejobs.kubetune.io", "evaljobs.kubetune.io"):  # helm.sh/resource-policy: keep
            assert get_json("crd", crd) is not None
        assert get_json("ftj", "first", "-n", watched) is not None
    finally:
        if installed:
            helm("uninstall", release, "-n", system, check=False)
        kubectl("delete", "namespace", watched, system, "--wait=false", check=False)
        kubectl("delete", "clustertrainingruntime", "cpu", "--ignore-not-found", check=False)  # hooks outlive the release
        shutil.rmtree(outputs, ignore_errors=True)
        for process in paused:
            process.start()
