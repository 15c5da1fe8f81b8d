"""What a hostile tenant costs the operator: oversized statuses and relabelled look-alikes.

Starts the operator as the e2e tests do (its ServiceAccount's token, its admission webhooks),
then, in a fresh namespace, as the cluster admin (more than any tenant may):
  1. --evaljobs EvalJobs (suspended: nothing runs), each sent a status of --keys score keys,
     as a tenant or a pod forging results would: every patch must be refused;
  2. one EvalJob labelled `kubetune.io/finetunejob: <name>` relabelled --relabels times with a
     new name each time: the operator must not grow per label value.
It prints the operator's resident memory (VmRSS) before, after each part and after a pause,
the time of one /metrics scrape and its size, then one JSON line.

Usage (the local cluster running):
    .venv/bin/python bench/operator_tenancy.py --evaljobs 20 --keys 50000 --relabels 10000
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from kubectl_utils import ADMIN_KUBECONFIG, STATE, OperatorProcess  # noqa: E402

GROUP, VERSION, PLURAL = "kubetune.io", "v1alpha1", "evaljobs"
SPEC = {"models": [{"name": "base", "path": "/models/none"}],
        "dataset": {"path": "qa.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
        "metrics": ["exact_match"], "output": {"path": "out"}, "suspend": True}


def _mib(operator: OperatorProcess) -> float:
    return round(operator.rss_bytes() / 2**20, 1)


def _scrape(operator: OperatorProcess) -> tuple[float, int]:
    start = time.perf_counter()
    text = operator.metrics()
    return round(time.perf_counter() - start, 3), len(text)


def oversized_statuses(api, namespace: str, count: int, keys: int) -> int:
    """Creates `count` EvalJobs and sends each a status of `keys` scores; returns how many were accepted."""
    accepted = 0
    huge = {"status": {"results": [{"model": "base", "scores": {f"k{i}": 0.5 for i in range(keys)}}]}}
    for i in range(count):
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EvalJob", "metadata": {"name": f"big-{i}"}, "spec": SPEC}
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
        try:
            api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, f"big-{i}", huge)
            accepted += 1
        except kubernetes.client.ApiException as refused:
            if refused.status not in (403, 422):
                raise
    return accepted


def relabel(api, namespace: str, times: int) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "EvalJob", "metadata": {"name": "look-alike"}, "spec": SPEC}
    api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    for i in range(times):
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "look-alike",
                                           {"metadata": {"labels": {"kubetune.io/finetunejob": f"victim-{i}"}}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--evaljobs", type=int, default=20)
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--relabels", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to wait after each part")
    args = parser.parse_args()
    for step in ("install", "kubeconfig"):
        subprocess.run(["bash", str(ROOT / "hack/operator.sh"), step], check=True, capture_output=True)
    operator = OperatorProcess(STATE / "logs" / "operator-tenancy.log")
    operator.start()
    api = kubernetes.client.CustomObjectsApi(kubernetes.config.new_client_from_config(config_file=str(ADMIN_KUBECONFIG)))
    core = kubernetes.client.CoreV1Api(api.api_client)
    namespace = f"bench-tenancy-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        time.sleep(args.settle)
        result = {"rssStartMiB": _mib(operator)}
        started = time.perf_counter()
        result["oversizedAccepted"] = oversized_statuses(api, namespace, args.evaljobs, args.keys)
        result["oversizedSeconds"] = round(time.perf_counter() - started, 1)
        time.sleep(args.settle)
        result["rssAfterOversizedMiB"] = _mib(operator)
        started = time.perf_counter()
        relabel(api, namespace, args.relabels)
        result["relabelSeconds"] = round(time.perf_counter() - started, 1)
        time.sleep(args.settle)
        result["rssAfterRelabelsMiB"] = _mib(operator)
        result["scrapeSeconds"], result["scrapeBytes"] = _scrape(operator)
    finally:
        core.delete_namespace(namespace)
        operator.stop()
    result.update(evaljobs=args.evaljobs, keys=args.keys, relabels=args.relabels)
    for key, value in result.items():
        print(f"{key:>22}  {value}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
