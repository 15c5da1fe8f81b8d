"""Shared fixtures for tests against the local cluster (hack/cluster/up.sh)."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest

import shutil

from kubectl_utils import ADMIN_KUBECONFIG, E2E_OUTPUTS, ROOT, STATE, OperatorProcess, kubectl

KUBECONFIG = ADMIN_KUBECONFIG


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of the admin kubeconfig of the running local cluster.

    Fails (does not skip): `make test` brings the cluster up first, so a missing or
    unreachable cluster is a real error."""
    from kubernetes import client, config

    if not KUBECONFIG.exists():
        pytest.fail(f"{KUBECONFIG} is missing: start the local cluster with "
                    "`bash hack/cluster/up.sh` (or `make cluster-up`)", pytrace=False)
    try:
        api = config.new_client_from_config(config_file=str(KUBECONFIG))
        client.VersionApi(api).get_code(_request_timeout=10)
    except Exception as e:  # noqa: BLE001 - any failure means the same thing here
        pytest.fail(f"the local cluster's API server is unreachable ({e}); start it with "
                    "`bash hack/cluster/up.sh`; logs in .cluster/logs/", pytrace=False)
    return str(KUBECONFIG)


@pytest.fixture(scope="session")
def operator(kubeconfig):
    # A demo operator on the same cluster would race this one for the same objects.
    subprocess.run(["bash", str(ROOT / "hack/operator.sh"), "stop"], check=True, capture_output=True)
    subprocess.run(["bash", str(ROOT / "hack/operator.sh"), "install"], check=True)
    subprocess.run(["bash", str(ROOT / "hack/operator.sh"), "kubeconfig"], check=True)
    process = OperatorProcess(STATE / "logs" / "operator-test.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
def namespace(kubeconfig):
    name = f"kt-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def workdir(namespace):
    """Where this test's pods write (runs/e2e/<namespace> in the pods' working directory)."""
    path = E2E_OUTPUTS / namespace
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def rows_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    words = ["red", "green", "blue", "cyan", "black", "white", "pink", "gold"]
    path.write_text("".join(json.dumps({"word": w, "upper": w.upper()}) + "\n" for w in words * 5))
    return path
