#!/usr/bin/env python3
"""Node agent of the local test cluster: plays the kubelet for one node.

There is no container runtime here. The agent registers a Node, keeps it Ready, and runs
each container of the pods bound to it as a local process: the image is ignored (the local
environment stands in for it), `command`/`args`, env, volumes, working directory, service
account credentials and the termination message are honoured, and the real exit codes are
reported in the pod status, so controllers (Job, ReplicaSet, the operator under test) see
what they would see on a real cluster.

How a "container" runs: `unshare --mount --propagation private` gives the process its own
mount namespace, in which the pod's volumes are bind-mounted at their mountPaths; then the
shell execs the command. The process is the leader of its own process group, so signals
reach whatever it spawned. Per pod state lives in <state>/pods/<namespace>/<pod>/.

It also provisions PersistentVolumes for pending claims (a directory per claim under
<state>/pvcs/<namespace>/<claim>), since the cluster has no storage provisioner.

Run: python node_agent.py --kubeconfig .cluster/kubeconfig --state .cluster
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import parse_quantity

REPO = Path(__file__).resolve().parents[2]  # stands in for the image's WORKDIR
HOST_IP = "127.0.0.1"
NODE_RESOURCES = {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi",
                  "nvidia.com/gpu": "4"}
HEARTBEAT_S = 10
RETRY_S = 2            # retry period for pods waiting on a missing configMap, secret, ...
KILL_GRACE_ON_EXIT_S = 3
MAX_MESSAGE = 4096     # the kubelet's limit for termination messages
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048
FINAL = ("Succeeded", "Failed")

log = logging.getLogger("node-agent")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class NotReady(Exception):
    """The pod cannot start yet (missing configMap, secret, token...): retried later."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class Unsupported(Exception):
    """The pod asks for something this agent cannot do: the pod fails."""


# --------------------------------------------------------------------------------------
# API access: plain JSON dicts (camelCase, as in manifests) over the client's transport.
# --------------------------------------------------------------------------------------
class Kube:
    def __init__(self, kubeconfig: str):
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 64
        self.api = client.ApiClient(cfg)
        self.server = cfg.host
        self.ca_pem = Path(cfg.ssl_ca_cert).read_bytes()

    def _send(self, method, path, body=None, query=None, content_type="application/json",
              timeout=30):
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        req = self.api.param_serialize(
            method=method, resource_path=path, query_params=list((query or {}).items()),
            header_params=headers, body=body, auth_settings=["BearerToken"])
        return self.api.call_api(*req, _request_timeout=timeout)

    def call(self, method, path, body=None, query=None, content_type="application/json"):
        resp = self._send(method, path, body, query, content_type)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException(status=resp.status, reason=resp.reason,
                               body=data.decode("utf-8", "replace"))
        return json.loads(data) if data else {}

    def get(self, path, **query):
        return self.call("GET", path, query=query or None)

    def get_or_none(self, path):
        try:
            return self.get(path)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def watch(self, path, query, timeout_s=300):
        """Yields watch events ({"type", "object"}) until the server ends the watch."""
        q = dict(query, watch="true", timeoutSeconds=str(timeout_s), allowWatchBookmarks="true")
        resp = self._send("GET", path, query=q, timeout=(10, timeout_s + 30))
        if resp.status != 200:
            data = resp.read()
            raise ApiException(status=resp.status, reason=resp.reason,
                               body=data.decode("utf-8", "replace"))
        raw = resp.response
        try:
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


def watch_forever(kube: Kube, path: str, query: dict, on_list, on_event, stop: threading.Event,
                  what: str):
    """List then watch `path`, re-listing whenever the watch breaks (410 Gone, errors).

    on_list(items) gets every full listing; on_event(type, obj) every later change."""
    rv = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = kube.get(path, **query)
                rv = listing["metadata"]["resourceVersion"]
                on_list(listing.get("items") or [])
            for ev in kube.watch(path, dict(query, resourceVersion=rv)):
                if stop.is_set():
                    return
                obj = ev.get("object") or {}
                if ev["type"] == "ERROR":  # usually 410 Gone: our resourceVersion is too old
                    log.info("%s watch: %s; re-listing", what, obj.get("message"))
                    rv = None
                    break
                rv = obj["metadata"]["resourceVersion"]
                if ev["type"] != "BOOKMARK":
                    on_event(ev["type"], obj)
        except Exception as e:  # noqa: BLE001 - the loop must survive anything
            if not stop.is_set():
                log.warning("%s watch failed (%s); re-listing", what, e)
                rv = None
                stop.wait(1)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------
def expand(text: str, env: dict) -> str:
    """Kubernetes $(VAR) expansion: $(VAR) -> value if defined, $$ -> $, else verbatim."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def proc_start_time(pid: int) -> str | None:
    """Start time of a process (field 22 of /proc/pid/stat): tells a pid from a reused one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def kill_group(pid: int, sig: int):
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        log.warning("no permission to signal process group %s", pid)


def write_files(root: Path, files: dict[str, tuple[bytes, int]]):
    """(Re)creates `root` holding files {relative path: (content, mode)}."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for rel, (content, mode) in files.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        target.chmod(mode)


def pick_items(data: dict[str, bytes], items, default_mode, optional, what) -> dict:
    """configMap/secret volume contents: all keys, or just `items` (key -> path, mode)."""
    if not items:
        return {k: (v, default_mode) for k, v in data.items()}
    files = {}
    for it in items:
        if it["key"] not in data:
            if optional:
                continue
            raise NotReady("FailedMount", f"{what} has no key {it['key']!r}")
        files[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
    return files


def tail_of_log(path: Path) -> str:
    """FallbackToLogsOnError: the last 80 lines of the log, at most 2048 bytes."""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    lines = data.splitlines(keepends=True)[-FALLBACK_LINES:]
    return b"".join(lines)[-FALLBACK_BYTES:].decode("utf-8", "replace")


class IPPool:
    """Pod IPs 127.0.0.2 .. 127.0.0.254, lowest free first, reused once released."""

    def __init__(self):
        self.used: set[int] = set()
        self.lock = threading.Lock()

    def allocate(self) -> str:
        with self.lock:
            for n in range(2, 255):
                if n not in self.used:
                    self.used.add(n)
                    return f"127.0.0.{n}"
        raise NotReady("IPExhausted", "no free pod IP on this node")

    def release(self, ip: str | None):
        if ip and ip.startswith("127.0.0.") and ip != HOST_IP:
            with self.lock:
                self.used.discard(int(ip.rsplit(".", 1)[1]))


# --------------------------------------------------------------------------------------
# One container: its spec, its current process, and what the status reports about it.
# --------------------------------------------------------------------------------------
class Container:
    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc: subprocess.Popen | None = None
        self.started_at: str | None = None
        self.restart_count = 0
        self.runs = 0
        self.state: dict = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: dict = {}
        self.next_start = 0.0       # monotonic time before which it may not (re)start
        self.done = False           # finished for good (no restart to come)

    @property
    def exit_code(self) -> int | None:
        t = self.state.get("terminated")
        return None if t is None else t["exitCode"]

    def waiting(self, reason: str, message: str | None = None):
        if self.proc is None:
            self.state = {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def status(self) -> dict:
        running = "running" in self.state
        st = {"name": self.name, "state": self.state, "lastState": self.last_state,
              "ready": running, "started": running, "restartCount": self.restart_count,
              "image": self.spec.get("image", ""), "imageID": ""}
        if self.runs:
            st["containerID"] = f"kubetune://{self.name}-{self.runs}"
        return st


# --------------------------------------------------------------------------------------
# One pod: a thread that prepares it, runs its containers and reports its status.
# --------------------------------------------------------------------------------------
class PodWorker(threading.Thread):
    def __init__(self, agent: "Agent", pod: dict):
        md = pod["metadata"]
        super().__init__(name=f"pod-{md['namespace']}/{md['name']}", daemon=True)
        self.agent, self.kube = agent, agent.kube
        self.pod = pod
        self.uid, self.ns, self.pod_name = md["uid"], md["namespace"], md["name"]
        self.key = f"{self.ns}/{self.pod_name}"
        self.dir = agent.state / "pods" / self.ns / self.pod_name
        spec = pod["spec"]
        self.restart_policy = spec.get("restartPolicy", "Always")
        self.inits = [Container(c, True) for c in spec.get("initContainers") or []]
        self.mains = [Container(c, False) for c in spec["containers"]]
        self.wake = threading.Event()
        self.gone = False            # the pod object no longer exists
        self.finished = False        # the thread is done (no process runs any more)
        self.end_lock = threading.Lock()
        self.ip: str | None = None
        self.ip_released = False
        self.restored_ip: str | None = None  # the IP an earlier agent run reported
        self.start_time: str | None = None
        self.started_mono = 0.0
        self.prepared = False
        self.prepare_at = 0.0
        self.volumes: dict[str, tuple[Path, bool]] = {}   # name -> (host path, readOnly)
        self.phase = "Pending"
        self.reason = self.message = None
        self.transitions: dict[str, tuple[str, str]] = {  # condition -> (status, since)
            c["type"]: (c["status"], c.get("lastTransitionTime") or now())
            for c in (pod.get("status") or {}).get("conditions") or []}
        self.last_sent = None
        self.deadline_kill: float | None = None
        self.killing = False         # set once the pod's processes are being stopped for good

    # -- called from the watch thread ------------------------------------------------
    def update(self, pod: dict):
        self.pod = pod
        self.wake.set()

    def mark_gone(self):
        """The pod object is deleted: stop everything; clean up once nothing runs."""
        with self.end_lock:
            self.gone = True
            clean = self.finished
        self.wake.set()
        if clean:
            self.clean_up()

    def clean_up(self):
        """Volumes (emptyDir data, configMap/secret copies) and credentials go with the pod,
        as on a real node; the logs stay for debugging until `down.sh --purge`."""
        for sub in ("volumes", "serviceaccount", "kubeconfig"):
            path = self.dir / sub
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    # -- main loop --------------------------------------------------------------------
    def run(self):
        try:
            self.lifecycle()
        except Exception as e:  # noqa: BLE001 - one bad pod must not take the agent down
            log.exception("%s: node agent error", self.key)
            self.kill_all(0)
            self.finish("Failed", "NodeAgentError", f"node agent error: {e}")
            self.report_until_sent()
        finally:
            self.release_ip()
            with self.end_lock:
                self.finished = True
                clean = self.gone
            if clean:
                self.clean_up()

    def lifecycle(self):
        status = self.pod.get("status") or {}
        if self.ran_before(status):
            self.restore(status)
            self.finish("Failed", "NodeAgentRestarted",
                        "the node agent restarted while this pod ran; its processes are gone")
            self.report_until_sent()
            return
        self.reset_dir()
        self.start_time = now()
        self.started_mono = time.monotonic()
        self.ip = HOST_IP if self.pod["spec"].get("hostNetwork") else self.agent.ips.allocate()
        log.info("%s: starting (pod IP %s)", self.key, self.ip)
        while not self.gone and not self.agent.stopping.is_set():
            if self.pod["metadata"].get("deletionTimestamp"):
                self.delete_gracefully()
                return
            try:
                self.step()
            except Unsupported as e:
                log.warning("%s: cannot run: %s", self.key, e)
                self.kill_all(0)
                for c in self.inits + self.mains:
                    if "waiting" in c.state:  # say why on the containers too (kubectl shows it)
                        c.state = {"terminated": {"exitCode": 128, "reason": "StartError",
                                                  "message": str(e), "finishedAt": now()}}
                self.finish("Failed", "NodeAgentUnsupported", str(e))
            self.report()
            if self.phase in FINAL and self.last_sent is not None:
                return  # nothing runs any more; the API server deletes finished pods at once
            self.wake.wait(self.next_timeout())
            self.wake.clear()
        self.kill_all(0 if self.gone else KILL_GRACE_ON_EXIT_S)

    def next_timeout(self) -> float:
        now_m = time.monotonic()
        due = [c.next_start for c in self.inits + self.mains
               if c.proc is None and not c.done and c.next_start > now_m]
        if not self.prepared:
            due.append(self.prepare_at)
        if self.deadline_kill:
            due.append(self.deadline_kill)
        if self.last_sent is None:
            due.append(now_m + 1)  # the last status update failed: retry soon
        return max(0.05, min(due, default=now_m + 30) - now_m)

    # -- one step: collect exits, start what is due, compute the phase -------------------
    def step(self):
        if self.phase in FINAL:
            return
        for c in self.inits + self.mains:
            if c.proc is not None and c.proc.poll() is not None:
                self.on_exit(c)
        if self.phase in FINAL:
            return
        if self.check_deadline():
            return
        if not self.prepared:
            if time.monotonic() < self.prepare_at:
                return
            try:
                self.prepare()
            except NotReady as e:
                log.info("%s: waiting: %s", self.key, e)
                for c in self.inits + self.mains:
                    c.waiting(e.reason if e.reason != "FailedMount" else "ContainerCreating", str(e))
                self.prepare_at = time.monotonic() + RETRY_S
                return
            self.prepared = True
        pending_init = next((c for c in self.inits if not c.done), None)
        if pending_init is not None:
            for c in self.mains:
                c.waiting("PodInitializing")
            self.maybe_start(pending_init)
            return
        for c in self.mains:
            self.maybe_start(c)
        self.update_phase()

    def maybe_start(self, c: Container):
        if c.proc is not None or c.done or time.monotonic() < c.next_start:
            return
        try:
            self.start_container(c)
        except NotReady as e:
            log.info("%s: container %s waiting: %s", self.key, c.name, e)
            c.waiting(e.reason, str(e))
            c.next_start = time.monotonic() + RETRY_S

    def on_exit(self, c: Container):
        rc = c.proc.returncode
        code = rc if rc >= 0 else 128 - rc   # killed by signal N -> 128+N, as runtimes do
        self.forget_pid(c)
        kill_group(c.proc.pid, signal.SIGKILL)  # a container's processes die with its main one
        c.proc = None
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": c.started_at, "finishedAt": now(),
                "containerID": f"kubetune://{c.name}-{c.runs}"}
        if rc < 0:
            term["signal"] = -rc
        msg = self.termination_message(c, code)
        if msg:
            term["message"] = msg
        c.state = {"terminated": term}
        log.info("%s: container %s exited with %s", self.key, c.name, code)
        restart = not self.killing and (
            self.restart_policy == "Always" or (self.restart_policy == "OnFailure" and code != 0))
        if c.init and code == 0:
            c.done = True
        elif c.init and self.restart_policy == "Never":
            c.done = True
            self.finish("Failed", None, None)
        elif restart:
            # Restart in place with a short backoff (1, 2, 4, 8, 10 s): the kubelet's is
            # 10 s .. 5 min, too slow for tests.
            delay = min(10, 2 ** c.restart_count)
            c.next_start = time.monotonic() + delay
            c.last_state = c.state
            c.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                   f"back-off {delay}s restarting failed container={c.name}"}}
        else:
            c.done = True

    def update_phase(self):
        if any(c.proc is not None for c in self.mains) or any(c.runs for c in self.mains):
            self.phase = "Running"
        if all(c.done for c in self.mains):
            ok = all(c.exit_code == 0 for c in self.mains)
            self.finish("Succeeded" if ok else "Failed", None, None)

    def check_deadline(self) -> bool:
        """spec.activeDeadlineSeconds: kill the pod and fail it, as the kubelet does."""
        limit = self.pod["spec"].get("activeDeadlineSeconds")
        if not limit:
            return False
        if self.deadline_kill is None:
            self.deadline_kill = self.started_mono + limit
        if time.monotonic() < self.deadline_kill:
            return False
        self.kill_all(0)
        self.finish("Failed", "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline")
        return True

    def finish(self, phase: str, reason: str | None, message: str | None):
        self.phase, self.reason, self.message = phase, reason, message
        self.deadline_kill = None
        for c in self.inits + self.mains:
            if "running" in c.state:  # a process we lost track of (agent restart)
                c.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                          "message": "the container's process is gone",
                                          "startedAt": c.state["running"].get("startedAt"),
                                          "finishedAt": now()}}
            c.done = True
        self.release_ip()
        log.info("%s: %s%s", self.key, phase, f" ({reason})" if reason else "")

    def release_ip(self):
        """Once only: the pod keeps showing its IP, which another pod may get next."""
        if not self.ip_released:
            self.ip_released = True
            self.agent.ips.release(self.ip)

    # -- deletion ---------------------------------------------------------------------
    def delete_gracefully(self):
        md = self.pod["metadata"]
        grace = md.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        log.info("%s: deleting, grace period %ss", self.key, grace)
        self.kill_all(grace)
        if self.phase not in FINAL:
            self.report()
        self.confirm_deletion()

    def confirm_deletion(self):
        """The API server keeps a gracefully deleted pod until its node says it is gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                "preconditions": {"uid": self.uid}}
        try:
            self.kube.call("DELETE", f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}", body)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def kill_all(self, grace: float):
        """SIGTERM every running process group, SIGKILL what is left after `grace` s.
        Nothing restarts afterwards: the pod is being deleted, failed or the agent stops."""
        self.killing = True
        running = [c for c in self.inits + self.mains if c.proc is not None]
        for c in running:
            kill_group(c.proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace
        # Exits wake us (reap_waiter); a forced deletion (gone) cuts the grace period short.
        while any(c.proc.poll() is None for c in running) and not self.gone:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.wake.wait(remaining)
            self.wake.clear()
        for c in running:
            if c.proc.poll() is None:
                kill_group(c.proc.pid, signal.SIGKILL)
                c.proc.wait()
            self.on_exit(c)
        self.wake.set()  # the waits above may have swallowed a pod update: look again

    # -- agent restarts ------------------------------------------------------------------
    def ran_before(self, status: dict) -> bool:
        """Did an earlier agent run start this pod? Then its processes are gone (the agent
        killed any leftovers at startup)."""
        if status.get("phase") == "Running":
            return True
        return any("running" in cs.get("state", {}) or "terminated" in cs.get("state", {})
                   for cs in (status.get("containerStatuses") or []) +
                   (status.get("initContainerStatuses") or []))

    def restore(self, status: dict):
        """Carry the reported container states over, so the final status keeps them."""
        self.start_time = status.get("startTime")
        old = {cs["name"]: cs for cs in (status.get("containerStatuses") or []) +
               (status.get("initContainerStatuses") or [])}
        for c in self.inits + self.mains:
            cs = old.get(c.name)
            if cs:
                c.restart_count = cs.get("restartCount", 0)
                c.state = cs.get("state") or c.state
                c.runs = 0 if "waiting" in c.state else 1
        self.restored_ip = status.get("podIP")

    # -- preparation: pod directory, volumes, credentials ------------------------------
    def reset_dir(self):
        """A pod directory belongs to one pod uid; a new pod of the same name starts clean."""
        uid_file = self.dir / "uid"
        if self.dir.exists() and not (uid_file.exists() and uid_file.read_text() == self.uid):
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        uid_file.write_text(self.uid)

    def prepare(self):
        self.volumes = {}
        for vol in self.pod["spec"].get("volumes") or []:
            self.volumes[vol["name"]] = self.materialize(vol)
        self.write_credentials()

    def materialize(self, vol: dict) -> tuple[Path, bool]:
        name = vol["name"]
        vdir = self.dir / "volumes" / name
        if "emptyDir" in vol:
            vdir.mkdir(parents=True, exist_ok=True)
            return vdir, False
        if "hostPath" in vol:
            hp = vol["hostPath"]
            path = Path(hp["path"])
            kind = hp.get("type", "")
            if kind == "DirectoryOrCreate":
                path.mkdir(parents=True, exist_ok=True)
            elif kind == "FileOrCreate" and not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif kind in ("Directory", "File", "Socket") and not path.exists():
                raise NotReady("FailedMount", f"hostPath {path} does not exist")
            return path, False
        if "persistentVolumeClaim" in vol:
            src = vol["persistentVolumeClaim"]
            path = self.agent.state / "pvcs" / self.ns / src["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            return path, bool(src.get("readOnly"))
        if "configMap" in vol:
            write_files(vdir, self.configmap_files(vol["configMap"]))
            return vdir, True
        if "secret" in vol:
            write_files(vdir, self.secret_files(vol["secret"]))
            return vdir, True
        if "downwardAPI" in vol:
            src = vol["downwardAPI"]
            write_files(vdir, self.downward_files(src.get("items") or [],
                                                  src.get("defaultMode", 0o644)))
            return vdir, True
        if "projected" in vol:
            write_files(vdir, self.projected_files(vol["projected"]))
            return vdir, True
        kinds = [k for k in vol if k != "name"]
        raise Unsupported(f"volume {name!r}: type {kinds} is not supported by the node agent")

    def configmap_files(self, src: dict, default_mode=None) -> dict:
        def contents(cm: dict) -> dict:
            data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
            return data
        return self.object_files("configmap", src["name"], src, default_mode, contents)

    def secret_files(self, src: dict, default_mode=None) -> dict:
        name = src.get("secretName") or src.get("name")
        return self.object_files("secret", name, src, default_mode,
                                 lambda sec: {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()})

    def object_files(self, kind: str, name: str, src: dict, default_mode, contents) -> dict:
        """Files of a configmap or secret volume source (with items, modes, optional)."""
        mode = src.get("defaultMode", default_mode or 0o644)
        what = f'{kind} "{name}"'
        obj = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}s/{name}")
        if obj is None:
            if src.get("optional"):
                return {}
            raise NotReady("FailedMount", f"{what} not found")
        return pick_items(contents(obj), src.get("items"), mode, src.get("optional"), what)

    def downward_files(self, items: list, default_mode: int) -> dict:
        files = {}
        for it in items:
            if "fieldRef" in it:
                value = self.field_ref(it["fieldRef"]["fieldPath"])
            else:
                value = self.resource_ref(it["resourceFieldRef"], None)
            files[it["path"]] = (value.encode(), it.get("mode", default_mode))
        return files

    def projected_files(self, proj: dict) -> dict:
        mode = proj.get("defaultMode", 0o644)
        files = {}
        for src in proj.get("sources") or []:
            if "configMap" in src:
                files.update(self.configmap_files(src["configMap"], mode))
            elif "secret" in src:
                files.update(self.secret_files(src["secret"], mode))
            elif "downwardAPI" in src:
                files.update(self.downward_files(src["downwardAPI"].get("items") or [], mode))
            elif "serviceAccountToken" in src:
                sat = src["serviceAccountToken"]
                token = self.request_token(sat.get("audience"), sat.get("expirationSeconds", 3600))
                files[sat["path"]] = (token.encode(), mode)
        return files

    def service_account(self) -> str:
        spec = self.pod["spec"]
        return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"

    def request_token(self, audience: str | None, expiration: int) -> str:
        """A token of the pod's own service account, bound to the pod (TokenRequest API)."""
        spec = {"expirationSeconds": max(600, int(expiration)),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": self.pod_name,
                                   "uid": self.uid}}
        if audience:
            spec["audiences"] = [audience]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        sa = self.service_account()
        try:
            tr = self.kube.call(
                "POST", f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        except ApiException as e:
            raise NotReady("FailedMount", f"cannot get a token for service account {sa!r}: "
                                          f"{e.status} {e.reason}") from e
        return tr["status"]["token"]

    def write_credentials(self):
        """A kubeconfig with the pod's own service account token: KUBECONFIG points at it, so
        kubernetes.config.load_config() and kubectl in the process act as that account."""
        sa_dir = self.dir / "serviceaccount"
        user: dict = {}
        if self.pod["spec"].get("automountServiceAccountToken", True) is not False:
            token = self.request_token(None, 86400)
            write_files(sa_dir, {"token": (token.encode(), 0o600),
                                 "ca.crt": (self.kube.ca_pem, 0o644),
                                 "namespace": (self.ns.encode(), 0o644)})
            user = {"token": token}
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "local", "cluster": {
                "server": self.kube.server,
                "certificate-authority-data": base64.b64encode(self.kube.ca_pem).decode()}}],
            "users": [{"name": f"system:serviceaccount:{self.ns}:{self.service_account()}",
                       "user": user}],
            "contexts": [{"name": "pod", "context": {
                "cluster": "local", "namespace": self.ns,
                "user": f"system:serviceaccount:{self.ns}:{self.service_account()}"}}],
        }
        path = self.dir / "kubeconfig"
        path.write_text(json.dumps(kubeconfig, indent=1))
        path.chmod(0o600)

    # -- env -------------------------------------------------------------------------
    def field_ref(self, path: str) -> str:
        md = self.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            items = sorted((md.get(path.split(".")[1]) or {}).items())
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
        ip = self.ip or ""
        values = {"metadata.name": md["name"], "metadata.namespace": md["namespace"],
                  "metadata.uid": md["uid"], "spec.nodeName": self.agent.node,
                  "spec.serviceAccountName": self.service_account(),
                  "status.podIP": ip, "status.podIPs": ip, "status.hostIP": HOST_IP,
                  "status.hostIPs": HOST_IP}
        if path not in values:
            raise Unsupported(f"fieldRef {path!r} is not supported")
        return values[path]

    def resource_ref(self, ref: dict, container: dict | None) -> str:
        """resourceFieldRef: limits default to the node's allocatable, requests to 0."""
        cname = ref.get("containerName")
        if cname:
            container = next(c.spec for c in self.inits + self.mains if c.name == cname)
        kind, _, res = ref["resource"].partition(".")
        value = ((container or {}).get("resources") or {}).get(kind, {}).get(res)
        if value is None and kind == "limits":
            value = NODE_RESOURCES.get(res, "0")
        divisor = parse_quantity(ref.get("divisor", "1"))
        q = parse_quantity(value or "0") / divisor
        return str(int(-(-q // 1)))  # ceiling, as the kubelet rounds up

    def base_env(self) -> dict:
        """The agent's environment (standing in for the image's), minus cluster access."""
        env = {k: v for k, v in os.environ.items()
               if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")}
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["HOSTNAME"] = self.pod_name
        return env

    def container_env(self, spec: dict) -> dict:
        """The env the pod spec declares (envFrom, then env in order, with $(VAR))."""
        declared: dict[str, str] = {}
        for ef in spec.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            if "configMapRef" in ef:
                data = self.keys_of("configmaps", ef["configMapRef"])
            else:
                data = self.keys_of("secrets", ef["secretRef"])
            for k, v in data.items():
                if re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", prefix + k):
                    declared[prefix + k] = v
        for e in spec.get("env") or []:
            if "valueFrom" not in e:
                declared[e["name"]] = expand(e.get("value", ""), declared)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                declared[e["name"]] = self.field_ref(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                declared[e["name"]] = self.resource_ref(vf["resourceFieldRef"], spec)
            else:
                kind, ref = (("configmaps", vf["configMapKeyRef"]) if "configMapKeyRef" in vf
                             else ("secrets", vf["secretKeyRef"]))
                data = self.keys_of(kind, ref)
                if ref["key"] in data:
                    declared[e["name"]] = data[ref["key"]]
                elif not ref.get("optional"):
                    raise NotReady("CreateContainerConfigError",
                                   f"couldn't find key {ref['key']} in {kind[:-1]} "
                                   f"{self.ns}/{ref['name']}")
        return declared

    def keys_of(self, kind: str, ref: dict) -> dict[str, str]:
        obj = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{kind}/{ref['name']}")
        if obj is None:
            if ref.get("optional"):
                return {}
            raise NotReady("CreateContainerConfigError", f'{kind[:-1]} "{ref["name"]}" not found')
        data = obj.get("data") or {}
        if kind == "secrets":
            return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
        return dict(data)

    # -- running a container ----------------------------------------------------------
    def mounts(self, spec: dict) -> list[tuple[Path, str, bool]]:
        """(host source, mountPath, readOnly) for each volumeMount, parents first."""
        out = []
        for vm in spec.get("volumeMounts") or []:
            if vm["name"] not in self.volumes:
                raise Unsupported(f"volumeMount {vm['name']!r} names no volume of the pod")
            src, ro = self.volumes[vm["name"]]
            if vm.get("subPath"):
                src = src / vm["subPath"]
                if not src.exists():
                    src.mkdir(parents=True)
            out.append((src, vm["mountPath"], bool(vm.get("readOnly")) or ro))
        return sorted(out, key=lambda m: len(Path(m[1]).parts))

    def start_container(self, c: Container):
        spec = c.spec
        declared = self.container_env(spec)
        argv = [expand(a, declared) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        env = {**self.base_env(), **declared, "KUBECONFIG": str(self.dir / "kubeconfig")}
        if not argv:
            raise Unsupported(f"container {c.name!r} has no command or args: the node agent "
                              "ignores images, so it needs the command to run")
        term_file = self.dir / f"{c.name}.termination-log"
        term_file.write_bytes(b"")
        mounts = self.mounts(spec)
        mounts.append((term_file, spec.get("terminationMessagePath") or "/dev/termination-log",
                       False))
        log_path = self.dir / f"{c.name}.log"
        if c.runs and log_path.exists():
            log_path.replace(self.dir / f"{c.name}.previous.log")  # like `kubectl logs -p`
        script = self.setup_script(mounts, spec.get("workingDir") or str(REPO))
        with open(log_path, "ab") as out:
            c.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--",
                 "sh", "-c", script, "kubetune-container", *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd="/", start_new_session=True)
        (self.dir / f"{c.name}.pid").write_text(f"{c.proc.pid} {proc_start_time(c.proc.pid)}\n")
        if c.runs:
            c.restart_count += 1
        c.runs += 1
        c.started_at = now()
        c.state = {"running": {"startedAt": c.started_at}}
        c.next_start = 0.0
        threading.Thread(target=self.reap_waiter, args=(c.proc,), daemon=True).start()
        log.info("%s: container %s started (pid %s): %s", self.key, c.name, c.proc.pid,
                 shlex.join(argv)[:200].replace("\n", "\\n"))

    def reap_waiter(self, proc: subprocess.Popen):
        proc.wait()
        self.wake.set()

    @staticmethod
    def setup_script(mounts: list[tuple[Path, str, bool]], cwd: str) -> str:
        """Shell run inside the container's mount namespace: bind the volumes, cd, exec."""
        lines = ["set -e"]
        for src, target, ro in mounts:
            s, t = shlex.quote(str(src)), shlex.quote(target)
            if src.is_dir():
                lines.append(f"mkdir -p {t}")
            else:
                lines.append(f"[ -e {t} ] || {{ mkdir -p \"$(dirname {t})\"; : > {t}; }}")
            lines.append(f"mount --bind {s} {t}")
            if ro:
                lines.append(f"mount -o remount,bind,ro {t}")
        lines.append(f"mkdir -p {shlex.quote(cwd)} && cd {shlex.quote(cwd)}")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def forget_pid(self, c: Container):
        (self.dir / f"{c.name}.pid").unlink(missing_ok=True)

    def termination_message(self, c: Container, code: int) -> str:
        try:
            msg = (self.dir / f"{c.name}.termination-log").read_bytes()[:MAX_MESSAGE]
        except OSError:
            msg = b""
        text = msg.decode("utf-8", "replace")
        if not text and code != 0 and \
                c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            text = tail_of_log(self.dir / f"{c.name}.log")
        return text

    # -- status -----------------------------------------------------------------------
    def condition(self, ctype: str, ok: bool, reason: str | None = None) -> dict:
        status = "True" if ok else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != status:
            self.transitions[ctype] = (status, now())
        cond = {"type": ctype, "status": status,
                "lastTransitionTime": self.transitions[ctype][1], "lastProbeTime": None}
        if reason and not ok:
            cond["reason"] = reason
        return cond

    def build_status(self) -> dict:
        terminal = self.phase in FINAL
        inited = all(c.done and c.exit_code == 0 for c in self.inits)
        ready = not terminal and all("running" in c.state for c in self.mains)
        not_ready = "PodCompleted" if terminal else "ContainersNotReady"
        st = {
            "phase": self.phase,
            "conditions": [
                self.condition("Initialized", inited, "ContainersNotInitialized"),
                self.condition("Ready", ready, not_ready),
                self.condition("ContainersReady", ready, not_ready),
                self.condition("PodScheduled", True),
            ],
            "hostIP": HOST_IP,
            "containerStatuses": [c.status() for c in self.mains],
        }
        if self.start_time:
            st["startTime"] = self.start_time
        ip = self.ip or self.restored_ip
        if ip:
            st["podIP"], st["podIPs"] = ip, [{"ip": ip}]
        if self.inits:
            st["initContainerStatuses"] = [c.status() for c in self.inits]
        if self.reason:
            st["reason"] = self.reason
        if self.message:
            st["message"] = self.message
        qos = (self.pod.get("status") or {}).get("qosClass")
        if qos:
            st["qosClass"] = qos
        return st

    def report_until_sent(self):
        """The final word on a pod must not be lost to an API hiccup."""
        self.report()
        while self.last_sent is None and not self.gone and not self.agent.stopping.wait(1):
            self.report()

    def report(self):
        """Sends the status if it changed; replaces it whole (the agent owns pod status)."""
        st = self.build_status()
        if st == self.last_sent or self.gone:
            return
        patch = [{"op": "replace", "path": "/status", "value": st}]
        try:
            self.kube.call("PATCH", f"/api/v1/namespaces/{self.ns}/pods/{self.pod_name}/status",
                           patch, content_type="application/json-patch+json")
            self.last_sent = st
        except ApiException as e:
            self.last_sent = None
            if e.status == 404:
                self.mark_gone()
            else:
                log.warning("%s: status update failed: %s %s", self.key, e.status, e.body)
        except Exception as e:  # noqa: BLE001 - API hiccup: retried on the next step
            self.last_sent = None
            log.warning("%s: status update failed: %s", self.key, e)


# --------------------------------------------------------------------------------------
# The agent: node registration, heartbeat, pod dispatch, claim provisioning.
# --------------------------------------------------------------------------------------
class Agent:
    def __init__(self, kube: Kube, node: str, state: Path):
        self.kube, self.node, self.state = kube, node, state
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.ips = IPPool()
        self.stopping = threading.Event()
        self.since = now()

    # -- node -------------------------------------------------------------------------
    def node_status(self) -> dict:
        t = now()

        def cond(ctype, status, reason, message):
            return {"type": ctype, "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": t, "lastTransitionTime": self.since}

        return {
            "capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "kubetune node agent is posting ready status"),
            ],
            "addresses": [{"type": "InternalIP", "address": HOST_IP},
                          {"type": "Hostname", "address": self.node}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": uuid.uuid5(uuid.NAMESPACE_DNS, self.node).hex,
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.node)),
                "bootID": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                "kernelVersion": os.uname().release, "osImage": "kubetune local node",
                "containerRuntimeVersion": "kubetune-local://1", "kubeletVersion": "v1.20.2",
                "kubeProxyVersion": "v1.20.2", "operatingSystem": "linux",
                "architecture": "amd64"},
        }

    def register_node(self):
        body = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64"}}}
        try:
            self.kube.call("POST", "/api/v1/nodes", body)
            log.info("registered node %s", self.node)
        except ApiException as e:
            if e.status != 409:
                raise
        self.heartbeat()

    def heartbeat(self):
        self.kube.call("PATCH", f"/api/v1/nodes/{self.node}/status",
                       {"status": self.node_status()},
                       content_type="application/strategic-merge-patch+json")
        self.untaint()
        self.renew_lease()

    def renew_lease(self):
        """The node's Lease in kube-node-lease, as kubelets keep it (for tools that look)."""
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        renew = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        try:
            self.kube.call("PATCH", path, {"spec": {"renewTime": renew}},
                           content_type="application/merge-patch+json")
        except ApiException as e:
            if e.status != 404:
                raise
            self.kube.call("POST", path.rsplit("/", 1)[0], {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": 40,
                         "renewTime": renew}})

    def untaint(self):
        """Admission taints a new node not-ready; the node lifecycle controller (off here)
        would lift it once Ready, so the agent does."""
        node = self.kube.get(f"/api/v1/nodes/{self.node}")
        taints = node["spec"].get("taints") or []
        keep = [t for t in taints if t["key"] not in ("node.kubernetes.io/not-ready",
                                                        "node.kubernetes.io/unreachable")]
        if len(keep) != len(taints):
            self.kube.call("PATCH", f"/api/v1/nodes/{self.node}",
                           {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]},
                            "spec": {"taints": keep or None}},
                           content_type="application/merge-patch+json")
            log.info("removed not-ready taint from node %s", self.node)

    def heartbeat_loop(self):
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                self.heartbeat()
            except ApiException as e:
                if e.status == 404:
                    log.warning("node %s was deleted; registering again", self.node)
                    self.safely(self.register_node)
                else:
                    log.warning("heartbeat failed: %s %s", e.status, e.reason)
            except Exception as e:  # noqa: BLE001
                log.warning("heartbeat failed: %s", e)

    @staticmethod
    def safely(fn, *args):
        try:
            fn(*args)
        except Exception:  # noqa: BLE001
            log.exception("%s failed", getattr(fn, "__name__", fn))

    # -- pods -------------------------------------------------------------------------
    def on_pod_list(self, pods: list[dict]):
        seen = {p["metadata"]["uid"] for p in pods}
        for pod in pods:
            self.on_pod("SYNC", pod)
        with self.lock:
            gone = [uid for uid in self.workers if uid not in seen]
        for uid in gone:
            self.on_pod_gone(uid)

    def on_pod(self, etype: str, pod: dict):
        uid = pod["metadata"]["uid"]
        if etype == "DELETED":
            self.on_pod_gone(uid)
            return
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None:
                # Finished before this agent started (nothing to do), or we are stopping.
                if (pod.get("status") or {}).get("phase") in FINAL or self.stopping.is_set():
                    return
                worker = self.workers[uid] = PodWorker(self, pod)
                worker.start()
                return
        worker.update(pod)

    def on_pod_gone(self, uid: str):
        with self.lock:
            worker = self.workers.pop(uid, None)
        if worker is not None:
            log.info("%s: pod object deleted", worker.key)
            worker.mark_gone()

    # -- claims -----------------------------------------------------------------------
    def on_claim_list(self, claims: list[dict]):
        for claim in claims:
            self.on_claim("SYNC", claim)
        # Volumes we provisioned whose claim is gone (deleted while the agent was down).
        live = {c["metadata"]["uid"] for c in claims}
        pvs = self.kube.get("/api/v1/persistentvolumes",
                            labelSelector="kubetune.local/provisioned=true")
        for pv in pvs.get("items") or []:
            ref = pv["spec"].get("claimRef") or {}
            if ref.get("uid") not in live:
                self.safely(self.delete_volume, ref.get("uid"), ref.get("namespace"),
                            ref.get("name"))

    def on_claim(self, etype: str, claim: dict):
        md, spec = claim["metadata"], claim["spec"]
        if etype == "DELETED":
            self.safely(self.delete_volume, md["uid"], md["namespace"], md["name"])
            return
        if spec.get("volumeName") or (claim.get("status") or {}).get("phase") != "Pending":
            return
        self.safely(self.provision, claim)

    def provision(self, claim: dict):
        """A PV pre-bound to the claim; the PV controller completes the binding."""
        md, spec = claim["metadata"], claim["spec"]
        path = self.state / "pvcs" / md["namespace"] / md["name"]
        path.mkdir(parents=True, exist_ok=True)
        size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
        pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {
            "name": f"pvc-{md['uid']}", "labels": {"kubetune.local/provisioned": "true"},
            "annotations": {"pv.kubernetes.io/provisioned-by": "kubetune.local/hostpath"}},
            "spec": {"capacity": {"storage": size},
                     "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                     "volumeMode": spec.get("volumeMode") or "Filesystem",
                     "persistentVolumeReclaimPolicy": "Delete",
                     "storageClassName": spec.get("storageClassName") or "",
                     "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                  "namespace": md["namespace"], "name": md["name"],
                                  "uid": md["uid"]},
                     "hostPath": {"path": str(path), "type": "DirectoryOrCreate"}}}
        try:
            self.kube.call("POST", "/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for claim %s/%s", pv["metadata"]["name"], md["namespace"],
                     md["name"])
        except ApiException as e:
            if e.status != 409:
                raise

    def delete_volume(self, uid: str | None, ns: str | None, name: str | None):
        if not uid:
            return
        try:
            self.kube.call("DELETE", f"/api/v1/persistentvolumes/pvc-{uid}")
        except ApiException as e:
            if e.status != 404:
                raise
            return
        if ns and name:
            shutil.rmtree(self.state / "pvcs" / ns / name, ignore_errors=True)
        log.info("deleted volume pvc-%s of claim %s/%s", uid, ns, name)

    # -- run --------------------------------------------------------------------------
    def kill_leftovers(self):
        """Pod processes an earlier agent run left behind (it crashed): nothing runs under
        this agent yet, so every live pid file is a leftover."""
        for pid_file in (self.state / "pods").glob("*/*/*.pid"):
            try:
                pid, start = pid_file.read_text().split()
                if proc_start_time(int(pid)) == start:
                    log.info("killing leftover process group %s (%s)", pid, pid_file)
                    kill_group(int(pid), signal.SIGKILL)
            except (ValueError, OSError):
                pass
            pid_file.unlink(missing_ok=True)

    def run(self):
        self.kill_leftovers()
        while True:  # the API server may still be settling when the agent starts
            try:
                self.register_node()
                break
            except Exception as e:  # noqa: BLE001
                log.warning("registering node %s failed (%s); retrying", self.node, e)
                if self.stopping.wait(1):
                    return
        threads = [
            threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=watch_forever, name="pods", daemon=True, args=(
                self.kube, "/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"},
                self.on_pod_list, self.on_pod, self.stopping, "pod")),
            threading.Thread(target=watch_forever, name="claims", daemon=True, args=(
                self.kube, "/api/v1/persistentvolumeclaims", {}, self.on_claim_list,
                self.on_claim, self.stopping, "claim")),
        ]
        for t in threads:
            t.start()
        while not self.stopping.wait(1):
            pass
        # Shutting down (down.sh): stop the pods' processes; the API may be going away too,
        # so no status is sent. A restarted agent marks such pods Failed.
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.wake.set()
        for w in workers:
            if w.is_alive():
                w.join(KILL_GRACE_ON_EXIT_S + 5)
        log.info("node agent stopped")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--state", required=True, help="the cluster state dir (.cluster)")
    ap.add_argument("--node", default="kubetune-local")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(threadName)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    agent = Agent(Kube(args.kubeconfig), args.node, Path(args.state).resolve())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stopping.set())
    agent.run()


if __name__ == "__main__":
    main()
