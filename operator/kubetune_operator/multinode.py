"""Multi-node training (spec.resources.nodes > 1): one attempt is N pods, one per machine rank.

- Rank 0 is the attempt's own Job (builders.job): its pod hosts torch.distributed's rendezvous
  store at its pod IP (downward API `status.podIP`) and a port derived from the FineTuneJob's
  uid, reports progress and writes the outputs.
- Ranks 1..N-1 are one Job each (`<attempt job>-w<rank>`), created by the operator once the
  rank-0 pod has an IP: a copy of the rank-0 Job's pod template whose env names the rank and
  the rank-0 pod's IP. No DNS, no Service, no Indexed Job: the operator hands the address
  over, so this works on any Kubernetes (the local cluster has no DNS, and 1.20 no Indexed
  Jobs) and ranks are fixed (every rank takes the same batches on a resumed attempt).

Rank 0 listens on a port any pod may reach, so the rank-0 Job's env carries a random token
(wire.ENV_RENDEZVOUS_TOKEN, new for each attempt) that the worker Jobs copy with the rest of its
template; the trainer checks that every process holds it before anything else moves (see
kubetune_trainer.training.rendezvous). `network_policy` also keeps other pods off the job's pods where
the cluster enforces NetworkPolicies.

Every pod runs the same command, `accelerate launch --num_machines N --machine_rank $(RANK)
...`, with one process per GPU (one on CPU, gpu: 0), so N x processes-per-pod processes join
one process group (NCCL on GPUs, gloo on CPUs). Pods and Jobs carry ROLE_LABEL (main or
worker) and RANK_LABEL; worker Jobs are owned by the FineTuneJob (controller) and by their
attempt's rank-0 Job, so deleting either collects them.

Where the API server has Indexed Jobs (1.22 and later), gang.py turns the rank-0 Job into one
Indexed Job for all ranks instead (rank = completion index, rank 0 by its DNS name): no worker
Jobs then, and `rank_of` reads a pod's completion index.

Pure functions: the handlers call `workers_to_create` on each sync and create what it returns.
"""
from __future__ import annotations

import copy
import hashlib
import secrets
import zlib
from dataclasses import replace
from typing import Any, Callable, Optional

from kubetune_api import Phase, wire
from kubetune_api.errors import Reason
from kubetune_operator import attempts, observe

RANK_LABEL = "kubetune.io/rank"
ROLE_LABEL = "kubetune.io/role"
MAIN_JOB_LABEL = "kubetune.io/main-job"  # on worker Jobs and pods: their attempt's rank-0 Job
MAIN, WORKER = "main", "worker"
ENV_MACHINE_RANK = "KUBETUNE_MACHINE_RANK"
ENV_MAIN_ADDRESS = "KUBETUNE_MAIN_ADDRESS"
ENV_MAIN_PORT = "KUBETUNE_MAIN_PORT"
BASE_PORT, PORTS = 29500, 500
MAX_JOB_NAME = 63  # the Job controller copies the name into a label value
# Labels the Job controller adds to a Job's template and selector; a copy must not keep them.
_CONTROLLER_LABELS = ("controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name")


def main_port(uid: str) -> int:
    """The rendezvous port of a FineTuneJob: fixed per job, spread over 29500-29999 so jobs
    sharing a network namespace (the local cluster's pods share the host's) do not collide."""
    return BASE_PORT + zlib.crc32(uid.encode()) % PORTS


def launch_command(processes_per_pod: int, nodes: int, config: list[str]) -> list[str]:
    """The trainer's command in every pod of a multi-node job; the rank and the rank-0 address
    come from the env ($(VAR) is expanded by the kubelet)."""
    return ["accelerate", "launch", "--multi_gpu", "--num_processes", str(processes_per_pod * nodes),
            "--num_machines", str(nodes), "--machine_rank", f"$({ENV_MACHINE_RANK})",
            "--main_process_ip", f"$({ENV_MAIN_ADDRESS})", "--main_process_port", f"$({ENV_MAIN_PORT})",
            "-m", "kubetune_trainer.cli", *config]


def main_env(uid: str) -> list[dict[str, Any]]:
    """The rank-0 pod's env: rank 0, its own pod IP as the rendezvous address, the job's port,
    and the attempt's rendezvous token: random, since anything derived from the job (its uid,
    its name) can be read by others."""
    return [{"name": ENV_MACHINE_RANK, "value": "0"},
            {"name": ENV_MAIN_ADDRESS, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": ENV_MAIN_PORT, "value": str(main_port(uid))},
            {"name": wire.ENV_RENDEZVOUS_TOKEN, "value": secrets.token_hex(32)}]


def main_labels() -> dict[str, str]:
    return {ROLE_LABEL: MAIN, RANK_LABEL: "0"}


def worker_job_name(main_job: str, rank: int) -> str:
    """`<rank-0 Job>-w<rank>`, shortened with a hash of the full name past 63 characters."""
    suffix = f"-w{rank}"
    if len(main_job) + len(suffix) <= MAX_JOB_NAME:
        return main_job + suffix
    digest = hashlib.sha256(main_job.encode()).hexdigest()[:5]
    return f"{main_job[:MAX_JOB_NAME - len(suffix) - 6].rstrip('-')}-{digest}{suffix}"


def _labels(labels: dict[str, str], main_job: str, rank: int) -> dict[str, str]:
    kept = {k: v for k, v in labels.items() if k not in _CONTROLLER_LABELS}
    return {**kept, ROLE_LABEL: WORKER, RANK_LABEL: str(rank), MAIN_JOB_LABEL: main_job}


def _worker_env(env: list[dict[str, Any]], rank: int, main_ip: str) -> list[dict[str, Any]]:
    values = {ENV_MACHINE_RANK: str(rank), ENV_MAIN_ADDRESS: main_ip}
    return [{"name": e["name"], "value": values[e["name"]]} if e["name"] in values else e for e in env]


def worker_job(main_job: dict[str, Any], rank: int, main_ip: str) -> dict[str, Any]:
    """The Job of machine rank `rank`: the rank-0 Job's pod template (image, volumes, resources,
    placement, security context: whatever the builder put there), with the worker's labels and
    env, owned by the FineTuneJob and by the rank-0 Job."""
    meta, spec = main_job["metadata"], main_job["spec"]
    template = copy.deepcopy(spec["template"])
    template["metadata"] = {**template.get("metadata", {}),
                            "labels": _labels(template.get("metadata", {}).get("labels") or {}, meta["name"], rank)}
    for container in template["spec"]["containers"]:
        container["env"] = _worker_env(container.get("env") or [], rank, main_ip)
    owners = [dict(ref) for ref in meta.get("ownerReferences") or []]
    if meta.get("uid"):  # as read from the API server: the worker belongs to its attempt too
        owners.append({"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"],
                       "controller": False, "blockOwnerDeletion": False})
    job_spec = {"backoffLimit": 0, "completions": 1, "parallelism": 1, "template": template}
    if spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = spec["activeDeadlineSeconds"]
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": worker_job_name(meta["name"], rank), "namespace": meta["namespace"],
                         "labels": _labels(meta.get("labels") or {}, meta["name"], rank), "ownerReferences": owners},
            "spec": job_spec}


INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"  # the Job controller's, on Indexed Jobs' pods


def rank_of(obj: dict[str, Any]) -> int:
    """The machine rank of a pod or Job: its rank label, else (a pod of an Indexed Job) its
    completion index; 0 for the rank-0 ones and for single-node jobs."""
    meta = obj.get("metadata") or {}
    value = (meta.get("labels") or {}).get(RANK_LABEL) or (meta.get("annotations") or {}).get(INDEX_ANNOTATION, "0")
    return int(value) if str(value).isdigit() else 0


def is_worker(obj: dict[str, Any]) -> bool:
    """A pod or Job of a rank other than 0."""
    return rank_of(obj) > 0


def _job_over(job: dict[str, Any]) -> bool:
    return observe.job_finished(job) or (job.get("spec") or {}).get("parallelism") == 0 or bool((job.get("spec") or {}).get("suspend"))


def _pod_of(job: dict[str, Any], pods: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The (one, live) pod of a Job: backoffLimit 0 never makes a second one."""
    uid = job["metadata"].get("uid")
    for pod in pods:
        refs = pod["metadata"].get("ownerReferences") or []
        if any(r.get("uid") == uid for r in refs) and (pod.get("status") or {}).get("phase") in ("Pending", "Running"):
            return pod
    return None


def workers_to_create(nodes: int, main_job: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker Jobs to create now (get-or-create: the handlers may call this on every sync):
    none before the rank-0 pod has an IP, after the attempt is over, or for ranks whose pod
    already exists. `main_job` is the attempt's rank-0 Job as read from the API server, `pods`
    the FineTuneJob's pods (any attempt), `nodes` spec.resources.nodes."""
    if nodes <= 1 or main_job is None or _job_over(main_job) or (main_job.get("spec") or {}).get("completionMode") == "Indexed":
        return []  # an Indexed Job (gang.py) makes every rank's pod itself
    main_pod = _pod_of(main_job, pods)
    ip = ((main_pod or {}).get("status") or {}).get("podIP")
    if not ip:
        return []
    name = main_job["metadata"]["name"]
    started = {rank_of(p) for p in pods if (p["metadata"].get("labels") or {}).get(MAIN_JOB_LABEL) == name}
    return [worker_job(main_job, rank, ip) for rank in range(1, nodes) if rank not in started]


def attempt_job_names(main_job: str, nodes: int) -> list[str]:
    """Every Job of an attempt, rank 0 first: what to stop when the attempt is over."""
    return [main_job] + [worker_job_name(main_job, rank) for rank in range(1, nodes)]


def _finished_at(pod: dict[str, Any]) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    terminated = ((statuses[0] if statuses else {}).get("state") or {}).get("terminated") or {}
    return terminated.get("finishedAt") or "9999"


def first_failure(pods: list[dict[str, Any]], is_infrastructure: Callable[[dict[str, Any]], Optional[bool]]
                  ) -> Optional[dict[str, Any]]:
    """The pod whose failure explains a failed attempt: when one rank dies the others fail too
    ("connection closed by peer"), so a pod the cluster took away (`is_infrastructure` True)
    comes first, then the one that failed earliest. `is_infrastructure` is None for pods that
    did not fail."""
    failed = [(verdict, pod) for pod in pods if (verdict := is_infrastructure(pod)) is not None]
    if not failed:
        return None
    first_end = min(_finished_at(pod) for _, pod in failed)
    # A pod deleted after another rank had already failed was stopped for it (an Indexed Job's
    # controller deletes the other ranks' pods when one fails): a consequence, never the cause.
    stopped = [_deleted_after(pod, first_end) for _, pod in failed]
    return min(zip(stopped, failed), key=lambda f: (f[0], not f[1][0], _finished_at(f[1][1]), rank_of(f[1][1])))[1][1]


def _deleted_after(pod: dict[str, Any], moment: str) -> bool:
    deleted = (pod.get("metadata") or {}).get("deletionTimestamp")
    return bool(deleted) and deleted > moment and _finished_at(pod) > moment


def _is_infrastructure(pod: dict[str, Any]) -> Optional[bool]:
    failure = attempts.classify(pod, observe.describe_failure(pod))
    return None if failure is None else failure["class"] == attempts.INFRASTRUCTURE


def observe_attempt(job: Optional[dict[str, Any]], pods: list[dict[str, Any]]) -> observe.Observation:
    """observe.observe for an attempt of any number of pods (`job` its rank-0 Job, `pods` all
    of its pods): rank 0's success is the attempt's success (its report, its termination
    message); a failure of any pod is the attempt's failure (see first_failure); a worker that
    cannot start (unschedulable, image pull) makes the attempt Pending with its reason."""
    workers = [p for p in pods if is_worker(p)]
    seen = observe.observe(job, [p for p in pods if not is_worker(p)])
    if not workers or seen.phase == Phase.Succeeded or seen.reason == Reason.DeadlineExceeded.value:
        return seen  # past the deadline the Job controller kills the workers too: not their failure
    failed = first_failure(pods, _is_infrastructure)
    if failed is not None and failed is not seen.failed_pod:
        status = failed.get("status") or {}
        reason, message, report = observe.describe_failure(failed) or (
            status.get("reason") or Reason.PodFailed.value, status.get("message") or "the pod failed", {})
        finished = _finished_at(failed)
        return replace(seen, phase=Phase.Failed, reason=reason, message=f"machine rank {rank_of(failed)}: {message}",
                       completion_time=None if finished == "9999" else finished, report=report, failed_pod=failed)
    if seen.phase != Phase.Running:
        return seen
    for worker in workers:
        if (worker.get("status") or {}).get("phase") == "Pending":
            waiting = observe.observe(job, [worker])
            if waiting.phase == Phase.Pending and waiting.reason != Reason.PodPending.value:  # stuck, not starting
                return replace(seen, phase=Phase.Pending, reason=waiting.reason,
                               message=f"machine rank {rank_of(worker)}: {waiting.message}")
    return seen
