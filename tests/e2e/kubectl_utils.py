"""Helpers for tests against the local cluster: real kubectl, a real operator process."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

ROOT = Path(__file__).resolve().parents[2]
STATE = ROOT / ".cluster"
ADMIN_KUBECONFIG = STATE / "kubeconfig"
OPERATOR_KUBECONFIG = STATE / "operator.kubeconfig"
# The operator installed alone from its extra (make install builds it), as in its image; as in
# hack/operator.sh, KUBETUNE_OPERATOR_BIN names another install (make test-deps-* does).
OPERATOR_BIN = Path(os.environ.get("KUBETUNE_OPERATOR_BIN", ROOT / ".venv-operator" / "bin" / "kubetune-operator"))
# Pods on the local cluster run in the repository root (their image's WORKDIR), and write
# only inside it unless a volume says otherwise: outputs go to runs/e2e/<namespace>/.
E2E_OUTPUTS = ROOT / "runs" / "e2e"
# The operator's ValidatingWebhookConfiguration (manifests/operator/webhook.yaml).
WEBHOOK_CONFIGURATION = "kubetune-operator-dev"  # hack/operator.sh's


def in_workdir(path: Path) -> str:
    """An output path as a spec gives it: relative to the pods' working directory."""
    return os.path.relpath(path, ROOT)


def kubectl(*args: str, stdin: Optional[str] = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)}
    result = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


def apply(obj: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess:
    return kubectl("apply", "-f", "-", stdin=yaml.safe_dump(obj), check=check)


def get_json(*args: str) -> Optional[dict[str, Any]]:
    result = kubectl("get", *args, "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    return json.loads(result.stdout)


@contextlib.contextmanager
def webhooks_off():
    """The operator's admission webhooks removed for a while, as when it is down with failurePolicy
    Ignore: what the webhook would refuse reaches the operator, which fails it itself."""
    saved = (get_json("validatingwebhookconfiguration", WEBHOOK_CONFIGURATION) or {}).get("webhooks") or []
    patch = lambda hooks: kubectl("patch", "validatingwebhookconfiguration", WEBHOOK_CONFIGURATION, "--type", "merge",
                                  "-p", json.dumps({"webhooks": hooks}))
    patch([])
    try:
        yield
    finally:
        patch(saved)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_final(kind: str, namespace: str, name: str, timeout: float = 300) -> dict[str, Any]:
    """Waits for a FineTuneJob (ftj) or EvalJob (evj) to reach Succeeded or Failed."""
    def final():
        obj = get_json(kind, name, "-n", namespace)
        return obj if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None
    return wait_for(final, timeout, f"{kind} {namespace}/{name} to finish")


def condition(obj, ctype="Succeeded"):
    return next(c for c in obj["status"]["conditions"] if c["type"] == ctype)


def succeeded_condition(obj):
    return condition(obj)


def events_for(namespace, name):
    events = get_json("events", "-n", namespace, "--field-selector", f"involvedObject.name={name}")["items"]
    return {(e["type"], e["reason"]): e["message"] for e in events}


def jobs_in(namespace):
    return get_json("jobs", "-n", namespace)["items"]


class OperatorProcess:
    """`kubetune-operator` as a local process with its ServiceAccount's credentials."""

    def __init__(self, log_path: Path):
        self.metrics_port = free_port()
        self.webhook_port = free_port()
        self.log_path = log_path
        self.failure_policy = "Ignore"
        self.command = [str(OPERATOR_BIN)]  # a test may run it through a wrapper
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> None:
        # Reports read every 2 s (tests wait for steps of a run that lasts seconds), and serving that
        # waits on KServe looked at every 5 s (a test installs its CRD after the job).
        env = {**os.environ, "KUBECONFIG": str(OPERATOR_KUBECONFIG), "KUBETUNE_REPORT_SECONDS": "2",
               "KUBETUNE_SERVING_STALLED_SECONDS": "5"}
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            [*self.command, "--metrics-port", str(self.metrics_port),
             "--metrics-address", "127.0.0.1", "--health-port", "0", *self.webhook_args()],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(self._serving, 60, "the operator to serve /metrics")
            wait_for(self.webhook_ready, 60, "the operator to set its admission webhooks")
        except BaseException:
            self.stop()  # an operator that never became ready must not outlive the session
            raise

    def webhook_args(self) -> list[str]:
        """The validating webhook, as hack/operator.sh runs it: the API server (on this host)
        calls https://127.0.0.1:<port>; failurePolicy Ignore unless a test sets it, so a
        stopped operator leaves nothing that refuses or stalls an apply."""
        return ["--webhook-port", str(self.webhook_port), "--webhook-address", "127.0.0.1",
                "--webhook-host", "127.0.0.1", "--webhook-configuration", WEBHOOK_CONFIGURATION,
                "--webhook-failure-policy", self.failure_policy, "--webhook-timeout", "5"]

    def webhook_ready(self) -> bool:
        config = get_json("validatingwebhookconfiguration", WEBHOOK_CONFIGURATION) or {}
        return any(f":{self.webhook_port}/" in (h.get("clientConfig") or {}).get("url", "")
                   for h in config.get("webhooks") or [])

    def _serving(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"operator exited with {self.process.returncode}; see {self.log_path}")
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return response.read().decode()

    def rss_bytes(self) -> int:
        """Resident memory of the operator process now."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS for the operator process")

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, as when a node dies under the operator."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
