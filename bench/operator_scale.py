"""Operator at scale: a burst of FineTuneJobs against the local cluster, and what the operator
pays for it (latency, memory, CPU, API requests).

Starts the operator as the e2e tests do (`hack/operator.sh install` and `kubeconfig`, then
`.venv-operator/bin/kubetune-operator` with the operator ServiceAccount's token and its admission
webhook), creates --jobs FineTuneJobs at once in a fresh namespace (16 client threads; each with
a nodeSelector no node has, so every pod stays Pending/Unschedulable: nothing trains), waits
until the operator has created every Job and reported every job Unschedulable, then --idle
seconds more, and deletes the namespace.

Measured:
  apply -> Job      from each create call's return to the Job's ADDED event (one watch, same
                    clock), and, as a cross-check, Job minus FineTuneJob creationTimestamp
                    (server-side, whole seconds)
  apply -> status   to the FineTuneJob's first watch event saying Unschedulable: the full loop
  RSS, CPU          the operator process's VmHWM (peak resident) and utime+stime, from /proc
  API requests      the operator's own, counted by the API server: API Priority and Fairness
                    FlowSchemas (one per verb) matching only the operator's ServiceAccount
                    (apiserver_flowcontrol_dispatched_requests_total; WATCH is not counted),
                    plus the apiserver_request_total rows for namespaced LISTs (the operator's
                    per-job reads: pods by label, events by field) for context

Usage (the local cluster running; under the shared lock):
    flock /tmp/kubetune-e2e.lock .venv/bin/python bench/operator_scale.py --jobs 500
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from kubectl_utils import ADMIN_KUBECONFIG, STATE, OperatorProcess  # noqa: E402

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "finetunejobs"
OPERATOR_SA = ("kubetune-system", "kubetune-operator")
VERBS = ("get", "list", "create", "patch", "update", "delete", "watch")
FLOW_PREFIX = "kubetune-bench-"
TICK = os.sysconf("SC_CLK_TCK")


def _kubectl(*args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)}
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, env=env, check=True,
                          timeout=300).stdout


# (name, verbs, API groups, resources) of each FlowSchema, first match wins: the operator's
# per-job reads (pods by label, events by field) apart, then one per verb.
FLOWS = [("list-pods", ["list"], [""], ["pods"]), ("list-events", ["list"], ["", "events.k8s.io"], ["events"]),
         *((verb, [verb], ["*"], ["*"]) for verb in VERBS), ("other", ["*"], ["*"], ["*"])]


def flow_schemas() -> list[dict]:
    """FlowSchemas for the operator's ServiceAccount only, in the priority level its requests get
    anyway (workload-low): they change nothing but the flow_schema label they are counted under."""
    subject = {"kind": "ServiceAccount", "serviceAccount": {"namespace": OPERATOR_SA[0], "name": OPERATOR_SA[1]}}
    schemas = []
    for index, (name, verbs, groups, resources) in enumerate(FLOWS):
        rule = {"subjects": [subject], "resourceRules": [{"verbs": verbs, "apiGroups": groups, "resources": resources,
                                                          "namespaces": ["*"], "clusterScope": True}]}
        if name == "other":
            rule["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        schemas.append({"apiVersion": "flowcontrol.apiserver.k8s.io/v1beta1", "kind": "FlowSchema",
                        "metadata": {"name": FLOW_PREFIX + name},
                        "spec": {"priorityLevelConfiguration": {"name": "workload-low"},
                                 "matchingPrecedence": 850 + index, "distinguisherMethod": {"type": "ByUser"},
                                 "rules": [rule]}})
    return schemas


def api_metrics() -> dict[str, float]:
    """The operator's requests so far, by the bench's FlowSchemas."""
    found: dict[str, float] = {}
    for line in _kubectl("get", "--raw", "/metrics").splitlines():
        if line.startswith("apiserver_flowcontrol_dispatched_requests_total{"):
            match = re.search(rf'flow_schema="{FLOW_PREFIX}([\w-]+)"', line)
            if match:
                found[match.group(1)] = float(line.rsplit(" ", 1)[1])
    return found


def list_cost(api: kubernetes.client.ApiClient, namespace: str, repeats: int = 20) -> float:
    """Seconds one label-selected pod LIST takes in the namespace (what each sync does): without a
    resourceVersion it is read from etcd, every pod of the namespace, then filtered."""
    core, began = kubernetes.client.CoreV1Api(api), time.monotonic()
    for _ in range(repeats):
        core.list_namespaced_pod(namespace, label_selector="kubetune.io/finetunejob=scale-0000", _preload_content=False)
    return (time.monotonic() - began) / repeats


def process_stats(pid: int) -> dict[str, float]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {"rss": int(status["VmRSS"].split()[0]) * 1024, "hwm": int(status["VmHWM"].split()[0]) * 1024,
            "cpu": (int(fields[11]) + int(fields[12])) / TICK}


def finetunejob(name: str, namespace: str) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FineTuneJob", "metadata": {"name": name, "namespace": namespace},
            "spec": {"model": {"path": "/bench/model"},
                     "dataset": {"path": "/bench/rows.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"},
                     "output": {"path": f"runs/bench/{name}"}, "resources": {"gpu": 0},
                     "nodeSelector": {"kubetune.io/bench": "no-such-node"}}}


class Watcher(threading.Thread):
    """First-seen times of each Job (ADDED) and of each FineTuneJob's Unschedulable status."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, kind: str, seconds: float):
        super().__init__(daemon=True)
        self.api, self.namespace, self.kind, self.seconds, self.seen = api, namespace, kind, seconds, {}

    def run(self) -> None:
        watch = kubernetes.watch.Watch()
        if self.kind == "jobs":
            call, args = kubernetes.client.BatchV1Api(self.api).list_namespaced_job, (self.namespace,)
        else:
            call, args = kubernetes.client.CustomObjectsApi(self.api).list_namespaced_custom_object, \
                (GROUP, VERSION, self.namespace, PLURAL)
        # One stream for the whole run (a daemon thread: left behind at the end).
        for event in watch.stream(call, *args, timeout_seconds=int(self.seconds)):
            obj = event["object"]
            obj = obj if isinstance(obj, dict) else self.api.sanitize_for_serialization(obj)
            owner = (obj["metadata"].get("labels") or {}).get("kubetune.io/finetunejob") if self.kind == "jobs" \
                else obj["metadata"]["name"]
            if owner and owner not in self.seen and self._counts(obj):
                self.seen[owner] = time.monotonic()

    def _counts(self, obj: dict) -> bool:
        if self.kind == "jobs":
            return True
        conditions = (obj.get("status") or {}).get("conditions") or []
        return any(c.get("type") == "Succeeded" and c.get("reason") == "Unschedulable" for c in conditions)


def create_burst(api: kubernetes.client.ApiClient, namespace: str, jobs: int) -> dict[str, float]:
    """Creates the FineTuneJobs from 16 threads; the time each create call returned."""
    custom = kubernetes.client.CustomObjectsApi(api)

    def create(index: int) -> tuple[str, float]:
        name = f"scale-{index:04d}"
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, finetunejob(name, namespace))
        return name, time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(create, range(jobs)))


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def server_side_latencies(api: kubernetes.client.ApiClient, namespace: str) -> list[float]:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))
    ftjs = kubernetes.client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    created = {o["metadata"]["name"]: parse(o["metadata"]["creationTimestamp"]) for o in ftjs}
    jobs = api.sanitize_for_serialization(kubernetes.client.BatchV1Api(api).list_namespaced_job(namespace).items)
    return [(parse(j["metadata"]["creationTimestamp"]) - created[j["metadata"]["labels"]["kubetune.io/finetunejob"]])
            .total_seconds() for j in jobs if j["metadata"]["labels"].get("kubetune.io/finetunejob") in created]


def start_operator() -> OperatorProcess:
    for step in ("stop", "install", "kubeconfig"):
        subprocess.run(["bash", str(ROOT / "hack/operator.sh"), step], check=True, capture_output=True)
    operator = OperatorProcess(STATE / "logs" / "operator-scale.log")
    operator.start()
    return operator


def wait_settled(operator: OperatorProcess, watchers: list[Watcher], jobs: int, timeout: float) -> float:
    """Until every Job exists and every job says Unschedulable (or the timeout); the peak RSS."""
    deadline, peak = time.monotonic() + timeout, 0
    while time.monotonic() < deadline and any(len(w.seen) < jobs for w in watchers):
        assert operator.process.poll() is None, f"the operator exited; see {operator.log_path}"
        peak = max(peak, process_stats(operator.process.pid)["rss"])
        time.sleep(0.5)
    return peak


def measure(api: kubernetes.client.ApiClient, operator: OperatorProcess, namespace: str, args) -> dict:
    pid = operator.process.pid
    watchers = [Watcher(api, namespace, kind, args.timeout + args.idle + 120) for kind in ("jobs", PLURAL)]
    for watcher in watchers:
        watcher.start()
    before, stats_before, began = api_metrics(), process_stats(pid), time.monotonic()
    created = create_burst(api, namespace, args.jobs)
    burst = time.monotonic() - began
    peak = wait_settled(operator, watchers, args.jobs, args.timeout)
    settled, stats_settled, after_settle = time.monotonic() - began, process_stats(pid), api_metrics()
    time.sleep(args.idle)
    stats_idle, after_idle = process_stats(pid), api_metrics()
    jobs_seen, status_seen = watchers[0].seen, watchers[1].seen
    delta = lambda a, b, key: a.get(key, 0) - b.get(key, 0)
    operator_requests = {name: delta(after_settle, before, name) for name, *_ in FLOWS}
    return {
        "jobs": args.jobs, "burstSeconds": round(burst, 1), "settledSeconds": round(settled, 1),
        "jobsCreated": len(jobs_seen), "unschedulableReported": len(status_seen),
        "applyToJob": [jobs_seen[n] - created[n] for n in jobs_seen if n in created],
        "applyToStatus": [status_seen[n] - created[n] for n in status_seen if n in created],
        "serverSide": server_side_latencies(api, namespace),
        "rssSampledPeak": peak, "rssHwm": stats_idle["hwm"],
        "rssBefore": stats_before["rss"], "rssAfter": stats_idle["rss"],
        "cpuBurst": stats_settled["cpu"] - stats_before["cpu"], "cpuIdle": stats_idle["cpu"] - stats_settled["cpu"],
        "operatorRequests": operator_requests,
        "idleRequests": sum(delta(after_idle, after_settle, name) for name, *_ in FLOWS),
        "idleByVerb": {name: delta(after_idle, after_settle, name) for name, *_ in FLOWS if delta(after_idle, after_settle, name)},
        "podListSeconds": list_cost(api, namespace),
    }


def report(m: dict, idle: float) -> dict:
    ms = lambda seconds: round(seconds * 1000)
    total = sum(m["operatorRequests"].values())
    result = {
        "jobs": m["jobs"], "jobsCreated": m["jobsCreated"], "unschedulableReported": m["unschedulableReported"],
        "burstSeconds": m["burstSeconds"], "settledSeconds": m["settledSeconds"],
        "applyToJobP50Ms": ms(percentile(m["applyToJob"], 50)), "applyToJobP99Ms": ms(percentile(m["applyToJob"], 99)),
        "applyToJobMaxMs": ms(max(m["applyToJob"], default=float("nan"))),
        "serverSideP50S": percentile(m["serverSide"], 50), "serverSideP99S": percentile(m["serverSide"], 99),
        "applyToStatusP50Ms": ms(percentile(m["applyToStatus"], 50)),
        "applyToStatusP99Ms": ms(percentile(m["applyToStatus"], 99)),
        "rssPeakMB": round(m["rssHwm"] / 2**20, 1), "rssBeforeMB": round(m["rssBefore"] / 2**20, 1),
        "rssAfterMB": round(m["rssAfter"] / 2**20, 1), "cpuSecondsBurst": round(m["cpuBurst"], 1),
        "cpuSecondsIdle": round(m["cpuIdle"], 2), "idleSeconds": idle,
        "operatorRequests": int(total), "requestsPerJob": round(total / m["jobs"], 2),
        "requestsPerJobByVerb": {v: round(n / m["jobs"], 2) for v, n in m["operatorRequests"].items() if n},
        "idleRequests": int(m["idleRequests"]), "idleByVerb": {k: int(v) for k, v in m["idleByVerb"].items()},
        "podListMs": ms(m["podListSeconds"]),
    }
    rows = [("jobs created by the operator", f"{result['jobsCreated']} / {m['jobs']}"),
            ("burst: creates / until settled", f"{m['burstSeconds']} s / {m['settledSeconds']} s"),
            ("apply -> Job p50 / p99 / max", f"{result['applyToJobP50Ms']} / {result['applyToJobP99Ms']} / {result['applyToJobMaxMs']} ms"),
            ("apply -> Job, server-side p50 / p99", f"{result['serverSideP50S']} / {result['serverSideP99S']} s (1 s resolution)"),
            ("apply -> Unschedulable status p50 / p99", f"{result['applyToStatusP50Ms']} / {result['applyToStatusP99Ms']} ms"),
            ("operator RSS before / peak / after", f"{result['rssBeforeMB']} / {result['rssPeakMB']} / {result['rssAfterMB']} MB"),
            ("operator CPU burst / idle", f"{result['cpuSecondsBurst']} s / {result['cpuSecondsIdle']} s in {idle} s"),
            ("operator API requests per job", f"{result['requestsPerJob']} ({result['operatorRequests']} in all)"),
            ("  by verb, per job", ", ".join(f"{k} {v}" for k, v in result["requestsPerJobByVerb"].items())),
            ("operator API requests while idle", f"{result['idleRequests']} in {idle} s ("
             + ", ".join(f"{k} {v}" for k, v in result["idleByVerb"].items()) + ")"),
            (f"one label-selected pod LIST among {m['jobs']} pods", f"{result['podListMs']} ms")]
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every job to settle")
    parser.add_argument("--idle", type=float, default=30, help="seconds to watch the settled operator")
    parser.add_argument("--keep", action="store_true", help="keep the namespace (default: delete it)")
    args = parser.parse_args()
    api = kubernetes.config.new_client_from_config(config_file=str(ADMIN_KUBECONFIG))
    api.configuration.connection_pool_maxsize = 32
    namespace = f"kt-scale-{uuid.uuid4().hex[:6]}"
    _kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": flow_schemas()}))
    operator = start_operator()
    _kubectl("create", "namespace", namespace)
    try:
        result = report(measure(api, operator, namespace, args), args.idle)
    finally:
        operator.stop()
        if not args.keep:
            _kubectl("delete", "namespace", namespace, "--wait=false")
        _kubectl("delete", "flowschema", *(FLOW_PREFIX + name for name, *_ in FLOWS), "--ignore-not-found")
    print(json.dumps({"operator_scale": result}))


if __name__ == "__main__":
    main()
