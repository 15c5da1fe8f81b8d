"""The pure side of a pod's lifecycle: container states, restart rules, the pod phase and
the status the agent reports (conditions included). No processes, no API: PodWorker
(pods.py) drives these, and tests exercise them directly."""
from __future__ import annotations

from .common import FINAL, HOST_IP, now
from .env import image_id

# Restart backoff 1, 2, 4, 8, 10 s: the kubelet's 10 s .. 5 min is too slow for tests.
BACKOFF_MAX_S = 10


def exit_code_of(returncode: int) -> int:
    """Exit code as runtimes report it: killed by signal N -> 128+N."""
    return returncode if returncode >= 0 else 128 - returncode


class Container:
    """One container: its spec, its current process, and what the status reports about it."""

    def __init__(self, spec: dict, init: bool):
        self.spec = spec
        self.name = spec["name"]
        self.init = init
        self.proc = None            # subprocess.Popen while a process runs
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
        """Says why the container does not run yet (only while no process runs)."""
        if self.proc is None:
            waiting = {"reason": reason, **({"message": message} if message else {})}
            self.state = {"waiting": waiting}

    def launched(self, started_at: str):
        """A process was started for it (a run after the first one counts as a restart)."""
        if self.runs:
            self.restart_count += 1
        self.runs += 1
        self.started_at = started_at
        self.state = {"running": {"startedAt": started_at}}
        self.next_start = 0.0

    def exited(self, returncode: int, message: str, finished_at: str):
        """Records the end of the process (Popen.returncode: negative if killed)."""
        code = exit_code_of(returncode)
        term = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                "startedAt": self.started_at, "finishedAt": finished_at,
                "containerID": f"kubetune://{self.name}-{self.runs}"}
        if returncode < 0:
            term["signal"] = -returncode
        if message:
            term["message"] = message
        self.state = {"terminated": term}

    def start_error(self, message: str):
        """The pod failed before this container could start: say why (kubectl shows it)."""
        if "waiting" in self.state:
            self.state = {"terminated": {"exitCode": 128, "reason": "StartError",
                                         "message": message, "finishedAt": now()}}

    def back_off(self, now_m: float):
        """Restart in place after a short, doubling delay; the exit becomes lastState."""
        delay = min(BACKOFF_MAX_S, 2 ** self.restart_count)
        self.next_start = now_m + delay
        self.last_state = self.state
        self.state = {"waiting": {"reason": "CrashLoopBackOff", "message":
                                  f"back-off {delay}s restarting failed container={self.name}"}}

    def status(self) -> dict:
        running = "running" in self.state
        st = {"name": self.name, "state": self.state, "lastState": self.last_state,
              "ready": running, "started": running, "restartCount": self.restart_count,
              "image": self.spec.get("image", ""), "imageID": image_id(self.spec.get("image", ""))}
        if self.runs:
            st["containerID"] = f"kubetune://{self.name}-{self.runs}"
        return st


def after_exit(c: Container, code: int, policy: str, killing: bool, now_m: float) -> bool:
    """Applies restartPolicy to a container that just exited. True if that fails the pod
    (an init container failed and will not be retried)."""
    restart = not killing and (policy == "Always" or (policy == "OnFailure" and code != 0))
    if c.init and code == 0:
        c.done = True
    elif c.init and policy == "Never":
        c.done = True
        return True
    elif restart:
        c.back_off(now_m)
    else:
        c.done = True
    return False


def main_phase(mains: list[Container]) -> str | None:
    """The phase the main containers imply: final once all are done, Running once one ran,
    None while none has started."""
    if all(c.done for c in mains):
        return "Succeeded" if all(c.exit_code == 0 for c in mains) else "Failed"
    if any(c.proc is not None or c.runs for c in mains):
        return "Running"
    return None


def end_states(containers: list[Container]):
    """The pod is over: nothing restarts, and containers still shown running lost their
    process (an agent restart)."""
    for c in containers:
        if "running" in c.state:
            c.state = {"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
                                      "message": "the container's process is gone",
                                      "startedAt": c.state["running"].get("startedAt"),
                                      "finishedAt": now()}}
        c.done = True


def reported_containers(status: dict) -> list[dict]:
    """All container statuses a pod status holds, main and init."""
    return (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or [])


def ran_before(status: dict) -> bool:
    """Did an earlier agent run start this pod? Then its processes are gone (the agent
    killed any leftovers at startup)."""
    if status.get("phase") == "Running":
        return True
    return any("running" in cs.get("state", {}) or "terminated" in cs.get("state", {})
               for cs in reported_containers(status))


def restore(containers: list[Container], status: dict):
    """Carry the reported container states over, so the final status keeps them."""
    old = {cs["name"]: cs for cs in reported_containers(status)}
    for c in containers:
        cs = old.get(c.name)
        if cs:
            c.restart_count = cs.get("restartCount", 0)
            c.state = cs.get("state") or c.state
            c.runs = 0 if "waiting" in c.state else 1


class Conditions:
    """Pod conditions; lastTransitionTime moves only when a condition's status flips
    (carried over from the pod's reported status)."""

    def __init__(self, reported: list[dict]):
        self.transitions: dict[str, tuple[str, str]] = {  # type -> (status, since)
            c["type"]: (c["status"], c.get("lastTransitionTime") or now()) for c in reported}

    def get(self, ctype: str, ok: bool, reason: str | None = None) -> dict:
        status = "True" if ok else "False"
        prev = self.transitions.get(ctype)
        if prev is None or prev[0] != status:
            self.transitions[ctype] = (status, now())
        cond = {"type": ctype, "status": status,
                "lastTransitionTime": self.transitions[ctype][1], "lastProbeTime": None}
        if reason and not ok:
            cond["reason"] = reason
        return cond


def build_status(phase: str, inits: list[Container], mains: list[Container],
                 conditions: Conditions, *, start_time: str | None = None,
                 ip: str | None = None, reason: str | None = None, message: str | None = None,
                 qos: str | None = None) -> dict:
    """The whole pod status, as the kubelet would report it (the agent owns it)."""
    terminal = phase in FINAL
    inited = all(c.done and c.exit_code == 0 for c in inits)
    ready = not terminal and all("running" in c.state for c in mains)
    not_ready = "PodCompleted" if terminal else "ContainersNotReady"
    st = {
        "phase": phase,
        "conditions": [
            conditions.get("Initialized", inited, "ContainersNotInitialized"),
            conditions.get("Ready", ready, not_ready),
            conditions.get("ContainersReady", ready, not_ready),
            conditions.get("PodScheduled", True),
        ],
        "hostIP": HOST_IP,
        "containerStatuses": [c.status() for c in mains],
    }
    if start_time:
        st["startTime"] = start_time
    if ip:
        st["podIP"], st["podIPs"] = ip, [{"ip": ip}]
    if inits:
        st["initContainerStatuses"] = [c.status() for c in inits]
    if reason:
        st["reason"] = reason
    if message:
        st["message"] = message
    if qos:
        st["qosClass"] = qos
    return st
