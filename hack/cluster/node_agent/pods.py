"""One pod: a thread that prepares it (directory, volumes, credentials), runs its
containers as processes, applies the restart policy, deadline and graceful deletion, and
reports its status. The decisions themselves are in lifecycle.py, env.py and volumes.py."""
from __future__ import annotations

import functools
import shlex
import signal
import threading
import time

from kubernetes.client.rest import ApiException

from .common import FINAL, HOST_IP, NotReady, Unsupported, log, now
from .env import PodFacts, base_env, declared_env, expand, keys_lookup
from .lifecycle import (Conditions, Container, after_exit, build_status, end_states,
                        exit_code_of, main_phase, ran_before, restore)
from .process import ContainerFiles, kill_group, launch, termination_message
from .volumes import VolumeMaker, clean_up, request_token, reset_dir, volume_mounts, \
    write_credentials

RETRY_S = 2            # retry period for pods waiting on a missing configMap, secret, ...
KILL_GRACE_ON_EXIT_S = 3


class PodWorker(threading.Thread):
    """Owns one pod on this node for its whole life; woken by pod updates and process exits."""

    def __init__(self, agent, pod: dict):
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
        self.volumes: dict = {}      # name -> (host path, readOnly)
        self.phase = "Pending"
        self.reason = self.message = None
        self.conditions = Conditions((pod.get("status") or {}).get("conditions") or [])
        self.last_sent = None
        self.deadline_kill: float | None = None
        self.killing = False         # set once the pod's processes are being stopped for good

    @property
    def containers(self) -> list[Container]:
        return self.inits + self.mains

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
            clean_up(self.dir)

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
                clean_up(self.dir)

    def lifecycle(self):
        status = self.pod.get("status") or {}
        if ran_before(status):
            restore(self.containers, status)
            self.start_time, self.restored_ip = status.get("startTime"), status.get("podIP")
            self.finish("Failed", "NodeAgentRestarted",
                        "the node agent restarted while this pod ran; its processes are gone")
            self.report_until_sent()
            return
        reset_dir(self.dir, self.uid)
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
                for c in self.containers:
                    c.start_error(str(e))
                self.finish("Failed", "NodeAgentUnsupported", str(e))
            self.report()
            if self.phase in FINAL and self.last_sent is not None:
                return  # nothing runs any more; the API server deletes finished pods at once
            self.wake.wait(self.next_timeout())
            self.wake.clear()
        self.kill_all(0 if self.gone else KILL_GRACE_ON_EXIT_S)

    def next_timeout(self) -> float:
        """Seconds until something is due: a (re)start, a retry, the deadline."""
        now_m = time.monotonic()
        due = [c.next_start for c in self.containers
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
        for c in self.containers:
            if c.proc is not None and c.proc.poll() is not None:
                self.on_exit(c)
        if self.phase in FINAL or self.check_deadline() or not self.ensure_prepared():
            return
        pending_init = next((c for c in self.inits if not c.done), None)
        if pending_init is not None:
            for c in self.mains:
                c.waiting("PodInitializing")
            self.maybe_start(pending_init)
            return
        for c in self.mains:
            self.maybe_start(c)
        phase = main_phase(self.mains)
        if phase == "Running":
            self.phase = phase
        elif phase is not None:
            self.finish(phase, None, None)

    def ensure_prepared(self) -> bool:
        """Volumes and credentials, once; retried every RETRY_S while something is missing."""
        if self.prepared:
            return True
        if time.monotonic() < self.prepare_at:
            return False
        try:
            self.prepare()
        except NotReady as e:
            log.info("%s: waiting: %s", self.key, e)
            for c in self.containers:
                c.waiting(e.reason if e.reason != "FailedMount" else "ContainerCreating", str(e))
            self.prepare_at = time.monotonic() + RETRY_S
            return False
        self.prepared = True
        return True

    def prepare(self):
        facts = self.facts()
        token = functools.partial(request_token, self.kube, self.pod)
        maker = VolumeMaker(self.dir, self.agent.state / "pvcs" / self.ns, facts, self.fetch,
                            token)
        self.volumes = {}
        for vol in self.pod["spec"].get("volumes") or []:
            self.volumes[vol["name"]] = maker.materialize(vol)
        write_credentials(self.dir, self.pod, self.kube.server, self.kube.ca_pem, token)

    def facts(self) -> PodFacts:
        return PodFacts(self.pod, self.agent.node, self.ip)

    def fetch(self, plural: str, name: str) -> dict | None:
        """A configMap or secret of the pod's namespace, None if it does not exist."""
        return self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/{plural}/{name}")

    def maybe_start(self, c: Container):
        if c.proc is not None or c.done or time.monotonic() < c.next_start:
            return
        try:
            self.start_container(c)
        except NotReady as e:
            log.info("%s: container %s waiting: %s", self.key, c.name, e)
            c.waiting(e.reason, str(e))
            c.next_start = time.monotonic() + RETRY_S

    def start_container(self, c: Container):
        spec = c.spec
        declared = declared_env(spec, self.facts(), keys_lookup(self.fetch))
        argv = [expand(a, declared) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        env = {**base_env(self.pod_name, spec.get("image", "")), **declared, "KUBECONFIG": str(self.dir / "kubeconfig")}
        if not argv:
            raise Unsupported(f"container {c.name!r} has no command or args: the node agent "
                              "ignores images, so it needs the command to run")
        c.proc = launch(ContainerFiles(self.dir, c.name), spec, argv, env,
                        volume_mounts(spec, self.volumes), restarted=bool(c.runs))
        c.launched(now())
        threading.Thread(target=self.reap_waiter, args=(c.proc,), daemon=True).start()
        log.info("%s: container %s started (pid %s): %s", self.key, c.name, c.proc.pid,
                 shlex.join(argv)[:200].replace("\n", "\\n"))

    def reap_waiter(self, proc):
        proc.wait()
        self.wake.set()

    def on_exit(self, c: Container):
        rc = c.proc.returncode
        code = exit_code_of(rc)
        files = ContainerFiles(self.dir, c.name)
        files.pid.unlink(missing_ok=True)
        kill_group(c.proc.pid, signal.SIGKILL)  # a container's processes die with its main one
        c.proc = None
        c.exited(rc, termination_message(files, code, c.spec.get("terminationMessagePolicy")),
                 now())
        log.info("%s: container %s exited with %s", self.key, c.name, code)
        if after_exit(c, code, self.restart_policy, self.killing, time.monotonic()):
            self.finish("Failed", None, None)

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
        end_states(self.containers)
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
        running = [c for c in self.containers if c.proc is not None]
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

    # -- status -----------------------------------------------------------------------
    def build_status(self) -> dict:
        return build_status(self.phase, self.inits, self.mains, self.conditions,
                            start_time=self.start_time, ip=self.ip or self.restored_ip,
                            reason=self.reason, message=self.message,
                            qos=(self.pod.get("status") or {}).get("qosClass"))

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
