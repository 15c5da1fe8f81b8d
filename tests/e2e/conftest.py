"""Shared fixtures for tests against the local cluster (hack/cluster/up.sh)."""
from __future__ import annotations

from pathlib import Path

import pytest

KUBECONFIG = Path(__file__).resolve().parents[2] / ".cluster" / "kubeconfig"


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
