"""Helpers for the Helm chart tests: the real Helm (helm-sdkpy, run by hack/helm/helm.py
under .venv-helm, Python 3.12) from these tests' Python via subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "kubetune"
HELM_PY = ROOT / "hack" / "helm" / "helm.py"
HELM_PYTHON = ROOT / ".venv-helm" / "bin" / "python"
ADMIN_KUBECONFIG = ROOT / ".cluster" / "kubeconfig"
MONITORING = "monitoring.coreos.com/v1"

# The e2e helpers (kubectl, wait_for, OperatorProcess) serve the cluster tests here too.
sys.path.insert(0, str(ROOT / "tests" / "e2e"))


def helm(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    if not HELM_PYTHON.exists():
        pytest.fail(f"{HELM_PYTHON} is missing: `make install` (or `make helm`) builds .venv-helm", pytrace=False)
    env = {**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)}
    result = subprocess.run([str(HELM_PYTHON), str(HELM_PY), *args], capture_output=True, text=True,
                            env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"helm.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def values_file(values: dict | None) -> str:
    handle = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, prefix="kt-values-")
    json.dump(values or {}, handle)
    handle.close()
    return handle.name


@lru_cache(maxsize=None)
def _template(values_json: str, api_versions: tuple[str, ...], notes: bool) -> str:
    path = values_file(json.loads(values_json))
    try:
        args = ["template", "kubetune", str(CHART), "-n", "kubetune-system", "-f", path]
        for gv in api_versions:
            args += ["--api-versions", gv]
        return helm(*args, *(["--notes"] if notes else [])).stdout
    finally:
        os.unlink(path)


def render(values: dict | None = None, api_versions: tuple[str, ...] = ()) -> list[dict]:
    """The objects `helm template kubetune charts/kubetune -n kubetune-system` renders."""
    text = _template(json.dumps(values or {}, sort_keys=True), tuple(api_versions), False)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def notes(values: dict | None = None) -> str:
    return _template(json.dumps(values or {}, sort_keys=True), (), True)


def rejected(values: dict) -> str:
    """helm's error for values the chart must refuse (the template fails)."""
    path = values_file(values)
    try:
        result = helm("template", "kubetune", str(CHART), "-n", "kubetune-system", "-f", path, check=False)
    finally:
        os.unlink(path)
    assert result.returncode != 0, f"values {values} were accepted"
    return result.stderr


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    (obj,) = by_kind(objects, kind)
    return obj


# Every optional object: the values that turn it on, and its kind.
TOGGLES = {
    "serviceMonitor": ({"metrics": {"serviceMonitor": {"enabled": True}}}, "ServiceMonitor"),
    "podMonitor": ({"metrics": {"podMonitor": {"enabled": True}}}, "PodMonitor"),
    "prometheusRule": ({"prometheusRule": {"enabled": True}}, "PrometheusRule"),
    "grafanaDashboard": ({"grafanaDashboard": {"enabled": True}}, "ConfigMap"),
    "networkPolicy": ({"networkPolicy": {"enabled": True}}, "NetworkPolicy"),
}


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """The local cluster's admin kubeconfig; fails (as tests/e2e does) when it is not up."""
    if not ADMIN_KUBECONFIG.exists():
        pytest.fail(f"{ADMIN_KUBECONFIG} is missing: start the local cluster with `make cluster-up`", pytrace=False)
    result = subprocess.run(["kubectl", "--kubeconfig", str(ADMIN_KUBECONFIG), "get", "--raw", "/readyz"],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"the local cluster's API server is unreachable: {result.stderr}", pytrace=False)
    return str(ADMIN_KUBECONFIG)
