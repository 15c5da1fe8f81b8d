"""Hundreds of generated malformed specs (malformed_specs.py) against the real API server and
operator: each is refused at apply or ends Failed with a reason and a message; none that the
spec alone condemns gets a pod; the operator neither crashes nor logs an error from our code;
and a valid job applied beside them still succeeds.

Applied twice: with the admission webhook (as users meet it), then, for the cases that need
no data, without it (an operator that was down, failurePolicy Ignore) so the operator's own
checks must fail what the webhook would have refused."""
from __future__ import annotations

import collections
import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from kubectl_utils import ADMIN_KUBECONFIG, apply, get_json, in_workdir, wait_final, webhooks_off
from malformed_specs import CHECK, NO_POD, Case, generate
from resilience_utils import by_owner, condition_of, log_since, tracebacks, unhandled
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster
VERDICT_TIMEOUT = 240
CHUNK = 40  # specs per `kubectl apply`
PLURALS = {"FineTuneJob": "finetunejobs.kubetune.io", "EvalJob": "evaljobs.kubetune.io"}


def _apply_list(items: list[dict]) -> subprocess.CompletedProcess:
    """One `kubectl apply` of a List. Server-side validation only (--validate=false): kubectl's
    own check would stop the whole List at its first bad item; the API server answers per item."""
    env = {**os.environ, "KUBECONFIG": str(ADMIN_KUBECONFIG)}
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
    return subprocess.run(["kubectl", "apply", "--validate=false", "-f", "-"], input=body, capture_output=True,
                          text=True, env=env, timeout=300)


def _apply_all(namespace: str, cases: list[Case], prefix: str) -> tuple[dict[str, Case], set[str]]:
    """Applies every case (named prefix + its name), a List per category (in chunks), eight at once;
    returns the cases by the name they were applied under, and the names kubectl says it created."""
    named = {prefix + case.name: case for case in cases}
    batches, counts = collections.defaultdict(list), collections.Counter()
    for name, case in named.items():
        body = case.body(namespace)
        body["metadata"]["name"] = name
        batches[(case.category, counts[case.category] // CHUNK)].append(body)
        counts[case.category] += 1
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(_apply_list, batches.values()))
    created = {line.split("/", 1)[1].rsplit(" ", 1)[0] for r in results for line in r.stdout.splitlines()
               if line.endswith(" created")}
    return named, created


def _objects(namespace: str) -> dict[str, dict]:
    items = get_json(",".join(PLURALS.values()), "-n", namespace)["items"]
    return {obj["metadata"]["name"]: obj for obj in items}


def _settled(obj: dict) -> bool:
    condition = condition_of(obj)
    return (obj.get("status") or {}).get("phase") == "Failed" and bool(condition.get("reason")) and bool(condition.get("message"))


def _wait_for_verdicts(namespace: str, names: set[str]) -> dict[str, dict]:
    deadline = time.monotonic() + VERDICT_TIMEOUT
    while True:
        objects = _objects(namespace)
        if all(_settled(objects[n]) for n in names if n in objects) or time.monotonic() > deadline:
            return objects
        time.sleep(2)


def _seconds_to_verdict(obj: dict) -> float:
    parse = lambda text: datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (parse(condition_of(obj)["lastTransitionTime"]) - parse(obj["metadata"]["creationTimestamp"])).total_seconds()


def _pod_accounts(pods: list) -> list:
    """What each pod's status says about how it ended: enough to tell a retry's cause from a CI log."""
    def account(pod):
        status = pod.get("status") or {}
        containers = {c["name"]: (c.get("state") or {}).get("terminated") for c in status.get("containerStatuses") or []}
        return {"name": pod["metadata"]["name"], "phase": status.get("phase"), "reason": status.get("reason"),
                "message": (status.get("message") or "")[:200], "containers": containers}
    return [account(p) for p in pods]


def _judge(applied: dict[str, Case], objects: dict[str, dict], pods: dict[str, list]) -> dict[str, list]:
    """Each applied case's outcome; 'gaps' and 'wrong' hold what breaks the rules."""
    outcome = collections.defaultdict(list)
    for name, case in applied.items():
        obj = objects.get(name)
        if obj is None:
            outcome["refused"].append(name)
            continue
        phase, reason = (obj.get("status") or {}).get("phase"), condition_of(obj).get("reason")
        if not _settled(obj):
            outcome["gaps"].append(f"{case.kind} {name} ({case.category}: {case.what}) is {phase} ({reason}); spec: "
                                   f"{json.dumps(case.spec)[:400]}")
        elif case.expect == NO_POD and pods.get(name):
            outcome["wrong"].append(f"{name} ({case.what}): Failed {reason} but has {len(pods[name])} pod(s)")
        elif case.expect == CHECK and (reason not in case.reasons or len(pods.get(name, [])) > 1
                                       or any(p["status"].get("phase") != "Failed" for p in pods.get(name, []))):
            outcome["wrong"].append(f"{name} ({case.what}): Failed {reason} with {len(pods.get(name, []))} pod(s); "
                                    f"expected {sorted(case.reasons)}, one failed pod at most; lastFailure "
                                    f"{obj['status'].get('lastFailure')}; pods: {_pod_accounts(pods.get(name, []))}")
        else:
            outcome["check" if pods.get(name) else "operator"].append(name)
    return outcome


def test_malformed_specs_are_refused_or_failed_and_the_operator_survives(operator, namespace, tiny_model_dir,
                                                                        rows_file, workdir):
    log_offset, pid = operator.log_path.stat().st_size, operator.process.pid
    cases = generate(str(tiny_model_dir), str(rows_file), in_workdir(workdir))
    assert len(cases) >= 200
    apply(finetunejob("valid", namespace, tiny_model_dir, rows_file, workdir / "valid", resources={"gpu": 0}))
    started = time.monotonic()
    applied, created = _apply_all(namespace, cases, "w")
    apply_seconds = [time.monotonic() - started]
    with webhooks_off():
        applied_off, created_off = _apply_all(namespace, [c for c in cases if c.expect == NO_POD], "o")
    applied.update(applied_off)
    apply_seconds.append(time.monotonic() - started - apply_seconds[0])
    objects = _wait_for_verdicts(namespace, set(applied))
    # Refusals are per spec: what exists is exactly what kubectl reported created.
    assert {n for n in applied if n in objects} == created | created_off
    valid = wait_final("ftj", namespace, "valid", timeout=120)
    pods = by_owner("pods", namespace)
    outcome = _judge(applied, objects, pods)

    reasons = lambda names: dict(collections.Counter(condition_of(objects[n])["reason"] for n in names))
    per_pass = lambda names: {p: sum(n.startswith(p) for n in names) for p in ("w", "o")}
    verdicts = sorted((_seconds_to_verdict(objects[n]), n) for n in outcome["operator"] + outcome["check"])
    summary = {"specs": len(cases), "applies": len(applied), "refusedAtApply": per_pass(outcome["refused"]),
               "failedBeforePod": {"count": per_pass(outcome["operator"]), "reasons": reasons(outcome["operator"])},
               "failedInCheckPhase": {"count": len(outcome["check"]), "reasons": reasons(outcome["check"])},
               "maxSecondsToVerdict": verdicts[-1][0] if verdicts else 0,
               "slowest": f"{verdicts[-1][1]}: {applied[verdicts[-1][1]].what}" if verdicts else None,
               "applySeconds": [round(s, 1) for s in apply_seconds], "gaps": len(outcome["gaps"]),
               "wrong": len(outcome["wrong"])}
    print(f"\nmalformed specs: {json.dumps(summary)}")

    assert not outcome["gaps"], "neither refused nor failed:\n" + "\n".join(outcome["gaps"])
    assert not outcome["wrong"], "\n".join(outcome["wrong"])
    assert valid["status"]["phase"] == "Succeeded", valid["status"]
    assert operator.process.poll() is None and operator.process.pid == pid, "the operator died"
    log = log_since(operator.log_path, log_offset)
    assert not tracebacks(log, namespace), "\n\n".join(tracebacks(log, namespace))
    assert not unhandled(log), unhandled(log)
