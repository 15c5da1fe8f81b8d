"""Container logs, as a kubelet serves them (node_agent/logs.py, node_agent/kubelet_api.py).

First the request handling alone (which file, tailLines, limitBytes, follow, refusals), no
cluster needed. Then through the real API server of the local cluster (`kubectl logs`, the
python client's read_namespaced_pod_log), and straight at the agent's port, where a client
without a certificate of the cluster CA is refused."""
from __future__ import annotations

import http.client
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from node_agent import logs
from node_agent.logs import LogError, LogRequest, copy_log, parse, tail_offset
from node_agent.process import ContainerFiles, proc_start_time

LINES = b"".join(b"line %d\n" % i for i in range(1, 21))


def never_gone(timeout: float) -> bool:
    time.sleep(timeout)
    return False


def must_not_wait(timeout: float) -> bool:
    raise AssertionError("copy_log waited for more")


def served(req: LogRequest, client_gone=never_gone) -> bytes:
    out = []
    copy_log(req, out.append, client_gone, poll_s=0.05)
    return b"".join(out)


# -- the request alone ---------------------------------------------------------------------
@pytest.fixture
def pods_root(tmp_path) -> Path:
    """One pod ns/p whose container main has logged LINES, after an earlier run."""
    files = ContainerFiles(tmp_path / "ns" / "p", "main")
    files.pod_dir.mkdir(parents=True)
    files.log.write_bytes(LINES)
    files.previous_log.write_bytes(b"earlier run\n")
    return tmp_path


@pytest.mark.parametrize("data, lines, rest", [
    (b"a\nb\nc\n", 2, b"b\nc\n"),
    (b"a\nb\nc", 2, b"b\nc"),          # a last line without its newline counts
    (b"a\nb\nc\n", 3, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 10, b"a\nb\nc\n"),
    (b"a\nb\nc\n", 0, b""),
    (b"", 5, b""),
    (b"\n\n\n", 2, b"\n\n"),           # empty lines are lines
])
def test_tail_offset(tmp_path, data, lines, rest):
    path = tmp_path / "log"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert data[tail_offset(f, lines):] == rest


def test_tail_offset_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "CHUNK", 7)  # lines straddle the backwards reads
    path = tmp_path / "log"
    path.write_bytes(LINES)
    with open(path, "rb") as f:
        for n in (1, 3, 19, 20, 21):
            assert LINES[tail_offset(f, n):] == b"".join(LINES.splitlines(True)[-n:])


def test_tail_then_limit_bytes(pods_root):
    path = "/containerLogs/ns/p/main"
    assert served(parse(pods_root, path, {})) == LINES
    assert served(parse(pods_root, path, {"tailLines": "2"})) == b"line 19\nline 20\n"
    # limitBytes cuts what tailLines selected, from its start (the kubelet's order).
    assert served(parse(pods_root, path, {"tailLines": "2", "limitBytes": "10"})) == \
        b"line 19\nli"
    assert served(parse(pods_root, path, {"limitBytes": "3"})) == b"lin"
    assert served(parse(pods_root, path, {"tailLines": "0"})) == b""
    # Accepted and ignored: the log carries no timestamps, and all of it is recent.
    assert served(parse(pods_root, path, {"sinceSeconds": "5", "timestamps": "true"})) == LINES


def test_previous_run(pods_root):
    req = parse(pods_root, "/containerLogs/ns/p/main", {"previous": "true"})
    assert served(req) == b"earlier run\n"
    (pods_root / "ns" / "p" / "main.previous.log").unlink()
    with pytest.raises(LogError) as e:
        parse(pods_root, "/containerLogs/ns/p/main", {"previous": "true"})
    assert e.value.status == 400  # the kubelet's answer: no earlier run


@pytest.mark.parametrize("path", [
    "/containerLogs/ns/p/../p/main", "/containerLogs/ns/../../etc", "/containerLogs/../ns/p",
    "/containerLogs/ns/p/main/x", "/containerLogs/ns/p", "/containerLogs/ns//main",
    "/containerLogs/ns/%2e%2e/main", "/containerLogs/ns/.p/main", "/containerLogs/NS/p/main",
    "/containerLogs/ns/p/main.previous", "/containerLogs/ns/p/ma\x00in",
])
def test_paths_outside_the_pod_directories_are_refused(pods_root, path):
    with pytest.raises(LogError) as e:
        parse(pods_root, path, {})
    assert e.value.status == 400


@pytest.mark.parametrize("query", [
    {"tailLines": "-1"}, {"tailLines": "x"}, {"tailLines": ""}, {"limitBytes": "0"},
    {"limitBytes": "1.5"}, {"follow": "yes"}, {"previous": ""}, {"timestamps": "2"},
])
def test_bad_parameters(pods_root, query):
    with pytest.raises(LogError) as e:
        parse(pods_root, "/containerLogs/ns/p/main", query)
    assert e.value.status == 400


@pytest.mark.parametrize("path", ["/containerLogs/ns/q/main", "/containerLogs/ns/p/other",
                                  "/containerLogs/other/p/main", "/stats/summary"])
def test_unknown_pod_or_container(pods_root, path):
    with pytest.raises(LogError) as e:
        parse(pods_root, path, {})
    assert e.value.status == 404


def running_container(files: ContainerFiles, script: str) -> subprocess.Popen:
    """A process writing to files.log, with the pid file the agent writes (and reaped at
    once, as the agent does, so its pid stops naming a process when it ends)."""
    with open(files.log, "ab") as out:
        proc = subprocess.Popen(["sh", "-c", script], stdout=out)
    files.pid.write_text(f"{proc.pid} {proc_start_time(proc.pid)}\n")
    threading.Thread(target=proc.wait, daemon=True).start()
    return proc


def test_follow_streams_until_the_container_stops(pods_root):
    files = ContainerFiles(pods_root / "ns" / "p", "main")
    files.log.write_bytes(b"")
    running_container(files, "echo one; sleep 0.5; echo two; sleep 0.5; echo three")
    req = parse(pods_root, "/containerLogs/ns/p/main", {"follow": "true"})
    start = time.monotonic()
    assert served(req) == b"one\ntwo\nthree\n"
    assert time.monotonic() - start >= 0.9  # it waited for the lines still to come


def test_follow_ends_when_the_client_goes(pods_root):
    files = ContainerFiles(pods_root / "ns" / "p", "main")
    proc = running_container(files, "sleep 30")
    try:
        req = parse(pods_root, "/containerLogs/ns/p/main", {"follow": "1"})
        assert served(req, client_gone=lambda timeout: True) == LINES
    finally:
        proc.kill()


def test_follow_of_a_stopped_container_or_with_limit_returns_at_once(pods_root):
    path = "/containerLogs/ns/p/main"
    assert served(parse(pods_root, path, {"follow": "true"}), client_gone=must_not_wait) == LINES
    files = ContainerFiles(pods_root / "ns" / "p", "main")
    proc = running_container(files, "sleep 30")
    try:
        req = parse(pods_root, path, {"follow": "true", "limitBytes": "4"})
        assert served(req, client_gone=must_not_wait) == b"line"
    finally:
        proc.kill()


# -- through the local cluster -------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]
ADMIN_KUBECONFIG = REPO / ".cluster" / "kubeconfig"
PKI = REPO / ".cluster" / "pki"
NODE = "kubetune-local"
PRINT_LINES = "for i in $(seq 1 20); do echo line $i; done"
# Run 1 fails; run 2 (OnFailure) logs a line, then another 3 s later. /tmp is the pod's
# emptyDir, which outlives a container restart.
RESTARTING = ("if [ -e /tmp/ran ]; then echo second run; sleep 3; echo second run done; "
              "else touch /tmp/ran; echo first run; exit 1; fi")


@pytest.fixture(scope="module")
def core():
    from kubernetes import client, config

    if not ADMIN_KUBECONFIG.exists():
        pytest.fail(f"{ADMIN_KUBECONFIG} is missing: start the local cluster with "
                    "`bash hack/cluster/up.sh`", pytrace=False)
    return client.CoreV1Api(config.new_client_from_config(str(ADMIN_KUBECONFIG)))


@pytest.fixture
def namespace(core):
    name = f"logs-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 60
    # Kubernetes 1.20 refuses pods until the service account has its token secret.
    while not any(sa.secrets for sa in core.list_namespaced_service_account(name).items):
        assert time.monotonic() < deadline, "no token secret for the default service account"
        time.sleep(0.2)
    yield name
    core.delete_namespace(name)


def run_pod(core, namespace: str, name: str, script: str, restart: str = "Never"):
    core.create_namespaced_pod(namespace, {"metadata": {"name": name}, "spec": {
        "nodeName": NODE, "restartPolicy": restart,
        "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script],
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}],
        "volumes": [{"name": "tmp", "emptyDir": {}}]}})


def wait_for(what: str, check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return result


def phase(core, namespace: str, name: str) -> str:
    return core.read_namespaced_pod(name, namespace).status.phase


def kubectl_logs(namespace: str, *args: str, timeout: float = 30) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(ADMIN_KUBECONFIG), "-n", namespace,
                           "logs", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.cluster
def test_kubectl_logs_and_the_clients_tail_and_limit(core, namespace):
    run_pod(core, namespace, "printer", PRINT_LINES)
    wait_for("printer to succeed", lambda: phase(core, namespace, "printer") == "Succeeded")
    assert kubectl_logs(namespace, "printer") == LINES.decode()
    assert kubectl_logs(namespace, "printer", "--tail", "3") == "line 18\nline 19\nline 20\n"
    read = core.read_namespaced_pod_log
    assert read("printer", namespace, container="main") == LINES.decode()
    assert read("printer", namespace, tail_lines=2) == "line 19\nline 20\n"
    assert read("printer", namespace, tail_lines=4, limit_bytes=12) == "line 17\nline"
    assert read("printer", namespace, limit_bytes=5) == "line "


@pytest.mark.cluster
def test_previous_without_an_earlier_run(core, namespace):
    from kubernetes.client.rest import ApiException

    run_pod(core, namespace, "printer", PRINT_LINES)
    wait_for("printer to succeed", lambda: phase(core, namespace, "printer") == "Succeeded")
    with pytest.raises(ApiException) as e:
        core.read_namespaced_pod_log("printer", namespace, previous=True)
    assert e.value.status == 400 and "previous terminated container" in e.value.body


@pytest.mark.cluster
def test_follow_and_previous_after_a_restart(core, namespace):
    run_pod(core, namespace, "restarts", RESTARTING, restart="OnFailure")
    read = core.read_namespaced_pod_log
    # Follow from while run 2 has logged its first line only: the second one must stream.
    wait_for("run 2's first line", lambda: (phase(core, namespace, "restarts") == "Running"
                                            and read("restarts", namespace) == "second run\n"))
    assert kubectl_logs(namespace, "-f", "restarts") == "second run\nsecond run done\n"
    assert kubectl_logs(namespace, "restarts", "--previous") == "first run\n"
    assert read("restarts", namespace, previous=True) == "first run\n"
    wait_for("restarts to succeed", lambda: phase(core, namespace, "restarts") == "Succeeded")
    status = core.read_namespaced_pod("restarts", namespace).status.container_statuses[0]
    assert status.restart_count == 1


# -- straight at the agent's port ----------------------------------------------------------
def agent_get(core, path: str, cert: tuple[Path, Path] | None):
    """GET on the node's kubelet endpoint, verifying the agent's certificate against the CA
    (so it is the cluster's own) and presenting `cert` (certificate, key) if given."""
    node = core.read_node(NODE)
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    address = next(a.address for a in node.status.addresses if a.type == "InternalIP")
    ctx = ssl.create_default_context(cafile=str(PKI / "ca.crt"))
    if cert:
        ctx.load_cert_chain(*map(str, cert))
    conn = http.client.HTTPSConnection(address, port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture
def foreign_cert(tmp_path) -> tuple[Path, Path]:
    """A client certificate of another CA (self-signed), made with the PKI's own tool."""
    crt, key = tmp_path / "foreign.crt", tmp_path / "foreign.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", key, "-out", crt, "-subj", "/CN=kube-apiserver-kubelet-client"],
                   check=True, capture_output=True)
    return crt, key


@pytest.mark.cluster
def test_only_clients_of_the_cluster_ca_read_logs(core, namespace, foreign_cert):
    run_pod(core, namespace, "printer", PRINT_LINES)
    wait_for("printer to succeed", lambda: phase(core, namespace, "printer") == "Succeeded")
    path = f"/containerLogs/{namespace}/printer/main?tailLines=1"
    apiserver = (PKI / "apiserver-kubelet-client.crt", PKI / "apiserver-kubelet-client.key")
    assert agent_get(core, path, apiserver) == (200, b"line 20\n")
    assert agent_get(core, f"/containerLogs/{namespace}/printer/nope", apiserver)[0] == 404
    assert agent_get(core, f"/containerLogs/{namespace}/printer/main?tailLines=-1",
                     apiserver)[0] == 400
    for cert in (None, foreign_cert):
        with pytest.raises(OSError):  # the TLS handshake fails: no HTTP answer at all
            agent_get(core, path, cert)

