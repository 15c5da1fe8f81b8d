"""A pod of a checkout under /tmp runs on the local cluster (issue 16): its volume
directories (<state>/pods/..., <state>/pvcs/...) lie under /tmp, and the pod mounts an
emptyDir at /tmp, as kubetune's trainer pods do.

The node agent's own pod code (PodWorker: volumes, credentials, launch, status) runs here
against the real API server, for a node of this test's own whose state dir is in a
checkout under /tmp with a space in its path, reached through a symlinked directory. The
pod names that node in spec.nodeName, so the scheduler leaves it alone and the cluster's
agent (which runs only its own node's pods) never sees it; no Node object is needed."""
from __future__ import annotations

import json
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from node_agent.ippool import IPPool
from node_agent.kube import Kube
from node_agent.pods import PodWorker

pytestmark = pytest.mark.cluster

ADMIN_KUBECONFIG = Path(__file__).resolve().parents[2] / ".cluster" / "kubeconfig"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # a secret volume, added by admission
HOST_TMP_SENTINEL = f"/tmp/kubetune-host-only-{uuid.uuid4().hex[:8]}"  # the pod must not see it


class OwnNode:
    """What a PodWorker uses of the Agent, for a node of its own."""

    def __init__(self, kube: Kube, state: Path):
        self.kube, self.state = kube, state
        self.node = f"tmp-checkout-{uuid.uuid4().hex[:8]}"
        self.ips = IPPool()
        self.stopping = threading.Event()


@pytest.fixture(scope="module")
def kube():
    if not ADMIN_KUBECONFIG.exists():
        pytest.fail(f"{ADMIN_KUBECONFIG} is missing: start the local cluster with "
                    "`bash hack/cluster/up.sh`", pytrace=False)
    return Kube(str(ADMIN_KUBECONFIG))


@pytest.fixture
def namespace(kube):
    name = f"tmpco-{uuid.uuid4().hex[:8]}"
    kube.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    # Kubernetes 1.20 refuses pods until the service account has its token secret.
    while not (kube.get_or_none(f"/api/v1/namespaces/{name}/serviceaccounts/default")
               or {}).get("secrets"):
        assert time.monotonic() < deadline, "no token secret for the default service account"
        time.sleep(0.2)
    yield name
    kube.call("DELETE", f"/api/v1/namespaces/{name}")


def trainer_like_pod(node: str, config_dir: str, workspace: str, data_dir: str) -> dict:
    """The volumes of a trainer pod: a configMap, a PVC, emptyDirs at /tmp and the workspace."""
    script = f"""
        import json, os
        from kubernetes import client, config
        out = {{"cwd": os.getcwd(), "marker": open("marker.txt").read(),
                "config": open("{config_dir}/app.yaml").read(),
                "in": open("{data_dir}/in.txt").read(),
                "host_tmp_hidden": not os.path.exists("{HOST_TMP_SENTINEL}"),
                "sa_namespace": open("{SA_DIR}/namespace").read()}}
        open("/tmp/scratch", "w").write("tmp")
        out["tmp"] = open("/tmp/scratch").read()
        open("{workspace}/w.txt", "w").write("workspace")
        open("{data_dir}/out.txt", "w").write("written")
        try:
            open("{config_dir}/new", "w")
            out["config_writable"] = True
        except OSError:
            out["config_writable"] = False
        config.load_config()  # KUBECONFIG: the pod's own kubeconfig, in its pod directory
        out["api"] = client.VersionApi().get_code().git_version
        open("/dev/termination-log", "w").write(json.dumps(out))
    """
    mounts = [{"name": "config", "mountPath": config_dir, "readOnly": True},
              {"name": "data", "mountPath": data_dir},
              {"name": "tmp", "mountPath": "/tmp"},
              {"name": "kubetune-workspace", "mountPath": workspace}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "trainer"}, "spec": {
        "nodeName": node, "restartPolicy": "Never",
        "containers": [{"name": "main", "image": "python:3.11-slim", "volumeMounts": mounts,
                        "command": ["python", "-c", textwrap.dedent(script)]}],
        "volumes": [{"name": "config", "configMap": {"name": "settings"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "tmp", "emptyDir": {}},
                    {"name": "kubetune-workspace", "emptyDir": {}}]}}


def test_pod_of_a_checkout_under_tmp_runs(kube, namespace, checkout, tmp_path):
    state = checkout / ".cluster"
    kube.call("POST", f"/api/v1/namespaces/{namespace}/configmaps",
              {"metadata": {"name": "settings"}, "data": {"app.yaml": "lr: 0.01\n"}})
    pvc = state / "pvcs" / namespace / "data"  # where the agent keeps the claim's data
    pvc.mkdir(parents=True)
    (pvc / "in.txt").write_text("kept")
    Path(HOST_TMP_SENTINEL).write_text("the host's /tmp")
    node = OwnNode(kube, state)
    # Targets outside /tmp are under tmp_path (the repo's .cluster/test-tmp): no litter in /.
    body = trainer_like_pod(node.node, *(str(tmp_path / d) for d in ("etc cfg", "work space",
                                                                     "data")))
    pod = kube.call("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    worker = PodWorker(node, pod)
    try:
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the pod did not finish within 60 s"
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/trainer")
        log = (state / "pods" / namespace / "trainer" / "main.log").read_text()
        assert pod["status"]["phase"] == "Succeeded", log
        out = json.loads(pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"])
        assert out.pop("api").startswith("v1.20")
        assert out == {"cwd": str(checkout), "marker": "the checkout", "config": "lr: 0.01\n",
                       "in": "kept", "host_tmp_hidden": True, "sa_namespace": namespace,
                       "tmp": "tmp", "config_writable": False}
        assert (pvc / "out.txt").read_text() == "written"
        volumes = state / "pods" / namespace / "trainer" / "volumes"
        assert (volumes / "tmp" / "scratch").read_text() == "tmp"
        assert (volumes / "kubetune-workspace" / "w.txt").read_text() == "workspace"
    finally:
        node.stopping.set()
        worker.wake.set()
        worker.join(30)
        Path(HOST_TMP_SENTINEL).unlink(missing_ok=True)
        kube.call("DELETE", f"/api/v1/namespaces/{namespace}/pods/trainer",
                  {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
