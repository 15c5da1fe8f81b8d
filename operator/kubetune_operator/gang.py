"""Gang scheduling of multi-node FineTuneJobs (spec.resources.nodes > 1): every rank of an
attempt is admitted and scheduled together, or the attempt holds nothing.

- One Job for all ranks where the API server has Indexed Jobs with stable pod hostnames
  (Kubernetes 1.22 and later: beta and on by default; on 1.21 the gate is off by default and
  the server would drop completionMode). The attempt's Job is Indexed with parallelism =
  completions = nodes; its pods' subdomain is the job's headless Service, so every rank finds
  rank 0 at `<job>-0.<service>` (DNS, published before pods are ready) instead of an IP the
  operator hands over, and takes its machine rank from its completion index. Under Kueue the
  Job is created suspended, so Kueue makes ONE Workload whose pod set counts all N pods:
  quota for every rank is reserved at once or not at all. Older servers (the local 1.20
  cluster) keep multinode's per-rank Jobs, admitted one by one: the timeout below guards them.
- scheduler-plugins' coscheduling: when the pods' schedulerName (the runtime's) is one the
  operator's settings name, each attempt gets a PodGroup (scheduling.x-k8s.io/v1alpha1) with
  minMember = nodes, named on every pod's `scheduling.x-k8s.io/pod-group` label: the scheduler
  binds no rank until it can bind them all. That needs every pod to exist at once (the Indexed
  Job; per-rank workers wait for rank 0's IP) and the PodGroup API: without either the job
  fails before any pod runs, never launching ungated ranks.
- spec.gang.timeoutSeconds: an attempt whose ranks have not all started that long after its
  first pod was created (pods exist only once Kueue admits) is released: its Jobs are deleted,
  so its pods go and with them Kueue's Workload and quota, and it fails with
  RanksNotScheduled, an infrastructure failure retried under spec.backoffLimit.

Pure but for `stop` and `release`, which stop or delete an attempt's Jobs.
"""
from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, Callable, Optional

from kubernetes.client.rest import ApiException

from kubetune_api.errors import Reason
from kubetune_api.gang import GANG_TIMEOUT_SECONDS
from kubetune_operator import attempts, builders, conditions, kube, multinode, observe, shared

INDEXED_SINCE = (1, 22)
POD_GROUP_API = ("scheduling.x-k8s.io", "v1alpha1", "podgroups")
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # a Service name (RFC 1035)


MAX_NAMED_RANKS = 4  # waiting ranks named in a RanksNotScheduled message


def indexed_jobs_supported(version: tuple[int, int]) -> bool:
    """Whether a server of this (major, minor) version makes Indexed Jobs with pod hostnames."""
    return tuple(version) >= INDEXED_SINCE


def timeout_seconds(spec: dict[str, Any]) -> int:
    """spec.gang.timeoutSeconds of a FineTuneJob's spec (as stored), else the default."""
    return int((spec.get("gang") or {}).get("timeoutSeconds") or GANG_TIMEOUT_SECONDS)


def coscheduled(scheduler_name: Optional[str]) -> bool:
    """Whether pods of this scheduler wait for their PodGroup (the operator's coschedulingSchedulers)."""
    return bool(scheduler_name) and scheduler_name in shared.config.settings.coscheduling_schedulers


def service_name(parent: str) -> str:
    """The job's headless Service: `<job>-train`, or a hashed name where that is no DNS label."""
    name = builders.child_name(parent, builders.FINETUNE)
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    return f"kubetune-{hashlib.sha256(parent.encode()).hexdigest()[:12]}"


def headless_service(meta: dict[str, Any]) -> dict[str, Any]:
    """The Service whose DNS names the job's pods (every attempt): `<pod hostname>.<service>`,
    published before the pods are ready, since ranks meet before any of them is."""
    selector = {builders.FINETUNE.label: meta["name"], builders.LABEL_MANAGED_BY: "kubetune"}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(meta["name"]), "namespace": meta["namespace"],
                         "labels": builders.labels(meta["name"], builders.FINETUNE),
                         "ownerReferences": [builders.owner_reference(meta, builders.FINETUNE)]},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": selector}}


def _indexed_env(env: list[dict[str, Any]], address: str) -> list[dict[str, Any]]:
    """The rank-0 env with the rank from the pod's completion index (the source of the Job
    controller's JOB_COMPLETION_INDEX) and rank 0's DNS name; the port and token stay."""
    index = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.annotations['{multinode.INDEX_ANNOTATION}']"}}}
    values = {multinode.ENV_MACHINE_RANK: index, multinode.ENV_MAIN_ADDRESS: {"value": address}}
    return [{"name": e["name"], **values[e["name"]]} if e["name"] in values else e for e in env]


def indexed_job(job: dict[str, Any], nodes: int, service: str) -> dict[str, Any]:
    """The attempt's one Job for all ranks, from the rank-0 Job builders.job made: Indexed,
    parallelism = completions = nodes (backoffLimit stays 0: one failed rank fails the Job and
    the Job controller stops the others), pods in the Service's subdomain. Rank labels go: a
    pod's rank is its completion index (multinode.rank_of reads it)."""
    out = copy.deepcopy(job)
    spec, template = out["spec"], out["spec"]["template"]
    spec.update(completionMode="Indexed", completions=nodes, parallelism=nodes)
    template["spec"]["subdomain"] = service
    for labels in (out["metadata"]["labels"], template["metadata"]["labels"]):
        labels.pop(multinode.RANK_LABEL, None)
        labels.pop(multinode.ROLE_LABEL, None)
    address = f"{out['metadata']['name']}-0.{service}"
    for container in template["spec"]["containers"]:
        container["env"] = _indexed_env(container.get("env") or [], address)
    return out


def pod_group(meta: dict[str, Any], name: str, nodes: int, timeout: int) -> dict[str, Any]:
    """The attempt's PodGroup: no rank is bound before `nodes` can be; owned by the FineTuneJob."""
    group, version, _ = POD_GROUP_API
    return {"apiVersion": f"{group}/{version}", "kind": "PodGroup",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": builders.labels(meta["name"], builders.FINETUNE),
                         "ownerReferences": [builders.owner_reference(meta, builders.FINETUNE)]},
            "spec": {"minMember": nodes, "scheduleTimeoutSeconds": timeout}}


def unavailable(nodes: int, scheduler_name: Optional[str], indexed: bool, pod_groups_served: Callable[[], bool]) -> Optional[str]:
    """Why the attempt cannot be gang-scheduled as its scheduler needs; None when it can."""
    if nodes <= 1 or not coscheduled(scheduler_name):
        return None
    if not indexed:
        return (f"the pods' scheduler {scheduler_name} schedules PodGroups, whose ranks must all exist at once: that needs "
                f"Indexed Jobs (Kubernetes {INDEXED_SINCE[0]}.{INDEXED_SINCE[1]} or later); this server has per-rank Jobs only")
    if not pod_groups_served():
        return (f"the pods' scheduler {scheduler_name} schedules PodGroups, but the cluster serves no "
                f"{'/'.join(POD_GROUP_API[:2])} {POD_GROUP_API[2]} (scheduler-plugins' CRDs are not installed); no rank launches ungated")
    return None


def attempt_objects(meta: dict[str, Any], job: dict[str, Any], nodes: int, indexed: bool, scheduler_name: Optional[str],
                    timeout: int) -> list[dict[str, Any]]:
    """What one attempt creates, in order, from the rank-0 Job builders.job made: the Service
    and PodGroup where they apply, the Job last."""
    if nodes <= 1:
        return [job]
    objects: list[dict[str, Any]] = []
    if indexed:
        objects.append(headless_service(meta))
        job = indexed_job(job, nodes, service_name(meta["name"]))
    if coscheduled(scheduler_name):
        name = job["metadata"]["name"]
        objects.append(pod_group(meta, name, nodes, timeout))
        job = copy.deepcopy(job)
        job["spec"]["template"]["metadata"]["labels"][POD_GROUP_LABEL] = name
    return objects + [job]


def _why_waiting(pod: dict[str, Any]) -> str:
    """Why a rank's pod has not started: the scheduler's word, else its container's (an image pull)."""
    scheduled = conditions.find(pod, "PodScheduled")
    if scheduled.get("status") == conditions.FALSE:
        return f"{scheduled.get('reason') or 'Unschedulable'}: {(scheduled.get('message') or '')[:200]}"
    waiting = (observe.main_status(pod).get("state") or {}).get("waiting") or {}
    if waiting.get("reason"):
        return f"{waiting['reason']}: {(waiting.get('message') or '')[:200]}".rstrip(": ")
    return f"pod {(pod.get('status') or {}).get('phase') or 'Pending'}"


def ranks_not_started(nodes: int, attempt: int, pods: list[dict[str, Any]], records: list[dict[str, Any]],
                      now: str, timeout: int) -> Optional[dict[str, Any]]:
    """The failure (status.lastFailure) of an attempt whose ranks have not all started within
    `timeout` s of its first pod, or None. `pods`: the attempt's pods; `records`: the ledger
    (a pod that ever started has a record, so a finished rank still counts as started)."""
    if nodes <= 1 or not pods:
        return None
    started = {r["name"] for r in records if r.get("attempt", 1) == attempt}
    if len(started) >= nodes:
        return None
    first = min(p["metadata"].get("creationTimestamp") or now for p in pods)
    if (shared.parse_time(now) - shared.parse_time(first)).total_seconds() < timeout:
        return None
    waiting = sorted((p for p in pods if p["metadata"]["name"] not in started), key=multinode.rank_of)
    # At most MAX_NAMED_RANKS named: 64 ranks' scheduler messages would outgrow the status.
    detail = [f"rank {multinode.rank_of(p)}: {_why_waiting(p)}" for p in waiting[:MAX_NAMED_RANKS]]
    if len(waiting) > MAX_NAMED_RANKS:
        detail.append(f"{len(waiting) - MAX_NAMED_RANKS} more ranks waiting")
    missing = sorted(set(range(nodes)) - {multinode.rank_of(p) for p in pods})
    if missing:
        detail.append(f"no pod for rank {', '.join(map(str, missing))}")
    return {"class": attempts.INFRASTRUCTURE, "reason": Reason.RanksNotScheduled.value,
            "message": f"{len(started)} of {nodes} ranks started within gang.timeoutSeconds ({timeout} s) of the attempt's "
                       f"first pod ({'; '.join(detail)}); its Jobs were deleted, so its pods hold no resources"}


def release(namespace: str, job_names: list[str]) -> None:
    """Deletes every Job of an attempt (their pods go in the background, and with the Jobs
    Kueue's Workloads and the quota they reserved); a Job already gone is fine."""
    for name in job_names:
        kube.delete_job(namespace, name)


def stop(namespace: str, job_names: list[str]) -> None:
    """Stops every Job of a failed attempt (parallelism 0; the Jobs and their logs stay): the
    other ranks cannot go on alone."""
    for name in job_names:
        try:
            kube.stop_job(namespace, name)
        except ApiException as exc:
            if exc.status != 404:  # a worker Job not created yet
                raise
