"""The local cluster itself: real control plane + hack/cluster/node_agent/ as the kubelet.

These prove that what the operator tests rely on really happens: Jobs run their container
command as a process and the Job controller sees the outcome, exit codes and termination
messages reach the pod status, volumes/env/service account credentials reach the process,
GPU requests schedule, and deleting a pod kills its processes.
"""
from __future__ import annotations

import json
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.cluster

NODE = "kubetune-local"
REPO = Path(__file__).resolve().parents[2]
FINAL = ("Succeeded", "Failed")


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(kubeconfig):
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="module")
def core(api):
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def batch(api):
    return client.BatchV1Api(api)


@pytest.fixture
def namespace(core):
    name = f"lc-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    # Kubernetes 1.20 refuses pods until the service account has its token secret.
    wait_for(core.list_namespaced_service_account, name, "default", lambda sa: sa and sa.secrets)
    yield name
    core.delete_namespace(name, propagation_policy="Background")


# -- helpers ----------------------------------------------------------------------------
def wait_for(list_fn, namespace, name, predicate, timeout=60):
    """Watches one object until predicate(obj) holds (obj is None while it does not exist)."""
    deadline = time.monotonic() + timeout
    selector = f"metadata.name={name}"
    last = None
    while (remaining := deadline - time.monotonic()) > 0:
        listing = list_fn(namespace, field_selector=selector)
        last = listing.items[0] if listing.items else None
        if predicate(last):
            return last
        w = watch.Watch()
        try:
            for event in w.stream(list_fn, namespace, field_selector=selector,
                                  resource_version=listing.metadata.resource_version,
                                  timeout_seconds=max(1, int(remaining))):
                last = None if event["type"] == "DELETED" else event["object"]
                if predicate(last):
                    w.stop()
                    return last
        except ApiException as e:
            if e.status != 410:  # 410: our resourceVersion expired; list again
                raise
    raise AssertionError(f"timed out after {timeout}s waiting for {name}; last seen:\n{last}")


def container(script: str, name: str = "main", **extra) -> dict:
    """A container running a Python script (the image is ignored by the node agent)."""
    return {"name": name, "image": "python:3.11-slim",
            "command": ["python", "-c", textwrap.dedent(script)], **extra}


def pod(name: str, *containers: dict, **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": list(containers), **spec}}


def run_pod(core, namespace: str, body: dict, timeout=60):
    """Creates the pod and waits for it to finish; returns the final pod."""
    core.create_namespaced_pod(namespace, body)
    return wait_for(core.list_namespaced_pod, namespace, body["metadata"]["name"],
                    lambda p: p and p.status.phase in FINAL, timeout)


def terminated(p, name="main"):
    status = next(s for s in p.status.container_statuses if s.name == name)
    assert status.state.terminated, f"container {name} did not terminate: {status.state}"
    return status.state.terminated


def message(p, name="main") -> str:
    return terminated(p, name).message or ""


def job(name: str, script: str, backoff_limit=0) -> dict:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"backoffLimit": backoff_limit, "template": {"spec": {
                "restartPolicy": "Never", "containers": [container(script)]}}}}


def job_condition(j, ctype):
    return next((c for c in (j.status.conditions or []) if c.type == ctype
                 and c.status == "True"), None)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- tests ------------------------------------------------------------------------------
def test_job_runs_to_completion(core, batch, namespace):
    batch.create_namespaced_job(namespace, job("ok", "print('hello from the job')"))
    done = wait_for(batch.list_namespaced_job, namespace, "ok",
                    lambda j: j and (job_condition(j, "Complete") or job_condition(j, "Failed")))
    assert job_condition(done, "Complete"), done.status
    assert done.status.succeeded == 1

    pods = core.list_namespaced_pod(namespace, label_selector="job-name=ok").items
    assert len(pods) == 1
    p = pods[0]
    assert p.spec.node_name == NODE
    assert p.status.phase == "Succeeded"
    assert p.status.pod_ip.startswith("127.0.0.") and p.status.pod_ip != "127.0.0.1"
    assert p.status.host_ip == "127.0.0.1"
    t = terminated(p)
    assert (t.exit_code, t.reason) == (0, "Completed")
    assert t.started_at and t.finished_at


def test_failing_job_reports_exit_code_and_fails(core, batch, namespace):
    batch.create_namespaced_job(namespace, job("bad", "import sys; sys.exit(3)"))
    done = wait_for(batch.list_namespaced_job, namespace, "bad",
                    lambda j: j and (job_condition(j, "Complete") or job_condition(j, "Failed")))
    assert job_condition(done, "Failed").reason == "BackoffLimitExceeded"

    pods = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert [p.status.phase for p in pods] == ["Failed"]
    t = terminated(pods[0])
    assert (t.exit_code, t.reason) == (3, "Error")


def test_termination_message_reaches_pod_status(core, namespace):
    p = run_pod(core, namespace, pod(
        "msg",
        container("open('/dev/termination-log', 'w').write('result: 42')"),
        container("open('/tmp/kubetune-custom-msg', 'w').write('custom path')", name="custom",
                  terminationMessagePath="/tmp/kubetune-custom-msg"),
        container("import sys; print('boom: the last words'); sys.exit(1)", name="fallback",
                  terminationMessagePolicy="FallbackToLogsOnError"),
    ))
    assert p.status.phase == "Failed"  # `fallback` exited 1
    assert message(p) == "result: 42"
    assert message(p, "custom") == "custom path"
    assert "boom: the last words" in message(p, "fallback")
    assert terminated(p, "fallback").exit_code == 1
    # The custom path was a bind mount in the container's own mount namespace.
    assert not Path("/tmp/kubetune-custom-msg").read_text()


def test_configmap_volume_is_mounted_read_only(core, namespace):
    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "settings"},
        "data": {"app.yaml": "lr: 0.01\n", "other": "x"}})
    script = """
        import json, os
        out = {"all": sorted(os.listdir("/etc/settings")),
               "item": open("/etc/picked/sub/renamed.yaml").read()}
        try:
            open("/etc/settings/new", "w")
            out["writable"] = True
        except OSError:
            out["writable"] = False
        open("/dev/termination-log", "w").write(json.dumps(out))
    """
    p = run_pod(core, namespace, pod(
        "cm", container(script, volumeMounts=[
            {"name": "all", "mountPath": "/etc/settings"},
            {"name": "picked", "mountPath": "/etc/picked"}]),
        volumes=[
            {"name": "all", "configMap": {"name": "settings"}},
            {"name": "picked", "configMap": {"name": "settings", "items": [
                {"key": "app.yaml", "path": "sub/renamed.yaml"}]}}]))
    assert p.status.phase == "Succeeded", message(p)
    assert json.loads(message(p)) == {"all": ["app.yaml", "other"], "item": "lr: 0.01\n",
                                       "writable": False}


def test_env_reaches_the_process(core, namespace):
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "cfg"},
                                                  "data": {"MODE": "fast", "LEVEL": "3"}})
    core.create_namespaced_secret(namespace, {"metadata": {"name": "sec"},
                                              "stringData": {"password": "hunter2"}})
    script = """
        import json, os, sys
        keys = ["POD_NAME", "POD_NS", "TEAM", "POD_IP", "GREETING", "MODE_FROM_CM",
                "PASSWORD", "CFG_MODE", "CFG_LEVEL"]
        out = {k: os.environ.get(k) for k in keys}
        out["cwd"] = os.getcwd()
        out["path0"] = os.environ["PATH"].split(":")[0]
        out["kubeconfig"] = os.environ.get("KUBECONFIG", "")
        out["service_host"] = os.environ.get("KUBERNETES_SERVICE_HOST")
        open("/dev/termination-log", "w").write(json.dumps(out))
    """
    body = pod("env-pod", container(script, env=[
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "TEAM", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(POD_NAME)"},
        {"name": "MODE_FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "MODE"}}},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
    ], envFrom=[{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}]))
    body["metadata"]["labels"] = {"team": "llm"}
    p = run_pod(core, namespace, body)
    assert p.status.phase == "Succeeded", message(p)
    env = json.loads(message(p))
    assert env.pop("kubeconfig").endswith(f"/pods/{namespace}/env-pod/kubeconfig")
    assert env == {
        "POD_NAME": "env-pod", "POD_NS": namespace, "TEAM": "llm", "POD_IP": p.status.pod_ip,
        "GREETING": "hello env-pod", "MODE_FROM_CM": "fast", "PASSWORD": "hunter2",
        "CFG_MODE": "fast", "CFG_LEVEL": "3", "cwd": str(REPO),
        "path0": str(REPO / ".venv" / "bin"), "service_host": None}


def test_process_acts_as_its_own_service_account(core, api, namespace):
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "runner"}})
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "read-cm"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "runner-read-cm"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}]})
    wait_for(core.list_namespaced_service_account, namespace, "runner",
             lambda sa: sa and sa.secrets)
    script = """
        import json
        from kubernetes import client, config
        config.load_config()
        v1 = client.CoreV1Api()
        out = {"allowed": len(v1.list_namespaced_config_map("%s").items) >= 0}
        try:
            v1.list_namespaced_secret("kube-system")
        except client.ApiException as e:
            out["status"], out["forbidden"] = e.status, json.loads(e.body)["message"]
        out["ns_file"] = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
        open("/dev/termination-log", "w").write(json.dumps(out))
    """ % namespace
    p = run_pod(core, namespace, pod("whoami", container(script), serviceAccountName="runner"))
    assert p.status.phase == "Succeeded", message(p)
    out = json.loads(message(p))
    assert out["allowed"] is True
    assert out["status"] == 403
    assert f"system:serviceaccount:{namespace}:runner" in out["forbidden"]
    assert out["ns_file"] == namespace


def test_gpu_request_schedules_on_the_node(core, namespace):
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    p = run_pod(core, namespace, pod("gpu", container("print('gpu')", resources=gpu)))
    assert p.status.phase == "Succeeded" and p.spec.node_name == NODE

    too_many = {"limits": {"nvidia.com/gpu": "5"}}  # the node has 4
    core.create_namespaced_pod(namespace, pod("greedy", container("", resources=too_many)))
    p = wait_for(core.list_namespaced_pod, namespace, "greedy",
                 lambda p: p and any(c.type == "PodScheduled" and c.status == "False"
                                     for c in p.status.conditions or []))
    assert "nvidia.com/gpu" in next(c.message for c in p.status.conditions
                                    if c.type == "PodScheduled")


def test_init_containers_then_restart_on_failure(core, namespace):
    init = container("open('/state/init', 'w').write('ready')", name="init",
                     volumeMounts=[{"name": "state", "mountPath": "/state"}])
    main = container("""
        import os, sys
        if not os.path.exists("/state/tried"):
            open("/state/tried", "w").close()
            sys.exit(7)  # the first run fails; OnFailure restarts it in place
        open("/dev/termination-log", "w").write(open("/state/init").read())
    """, volumeMounts=[{"name": "state", "mountPath": "/state"}])
    p = run_pod(core, namespace, pod("retry", main, initContainers=[init],
                                     restartPolicy="OnFailure",
                                     volumes=[{"name": "state", "emptyDir": {}}]))
    assert p.status.phase == "Succeeded"
    assert message(p) == "ready"
    status = p.status.container_statuses[0]
    assert status.restart_count == 1
    assert status.last_state.terminated.exit_code == 7
    assert p.status.init_container_statuses[0].state.terminated.reason == "Completed"


def test_persistent_volume_claim_keeps_data_between_pods(core, namespace):
    core.create_namespaced_persistent_volume_claim(namespace, {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}})
    wait_for(core.list_namespaced_persistent_volume_claim, namespace, "data",
             lambda c: c and c.status.phase == "Bound")
    volume = {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}
    mount = {"volumeMounts": [{"name": "d", "mountPath": "/data"}]}
    writer = run_pod(core, namespace, pod(
        "writer", container("open('/data/f', 'w').write('kept')", **mount), **volume))
    assert writer.status.phase == "Succeeded", message(writer)
    reader = run_pod(core, namespace, pod("reader", container(
        "open('/dev/termination-log', 'w').write(open('/data/f').read())", **mount), **volume))
    assert message(reader) == "kept"


def test_deleting_a_running_pod_kills_its_processes(core, namespace, tmp_path):
    # The process ignores SIGTERM (and so does its child, which inherits that), so the
    # agent must escalate to SIGKILL after the grace period, for the whole process group.
    script = """
        import os, signal, subprocess, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen(["sleep", "600"])
        open("/out/pids.tmp", "w").write(f"{os.getpid()} {child.pid}")
        os.rename("/out/pids.tmp", "/out/pids")
        time.sleep(600)
    """
    body = pod("sleeper", container(script, volumeMounts=[{"name": "out", "mountPath": "/out"}]),
               volumes=[{"name": "out", "hostPath": {"path": str(tmp_path)}}],
               terminationGracePeriodSeconds=1)
    core.create_namespaced_pod(namespace, body)
    wait_for(core.list_namespaced_pod, namespace, "sleeper",
             lambda p: p and p.status.phase == "Running")
    pid_file = tmp_path / "pids"
    deadline = time.monotonic() + 30
    while not pid_file.exists():  # written by the process right after it starts
        assert time.monotonic() < deadline, "the process never wrote its pids"
        time.sleep(0.1)
    pids = [int(x) for x in pid_file.read_text().split()]
    assert all(alive(pid) for pid in pids)

    started = time.monotonic()
    core.delete_namespaced_pod("sleeper", namespace)
    wait_for(core.list_namespaced_pod, namespace, "sleeper", lambda p: p is None, timeout=30)
    assert time.monotonic() - started < 15
    # SIGKILL is delivered when a process next leaves the kernel; under load that can lag the
    # API's view by a moment.
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids), f"still running: {pids}"
