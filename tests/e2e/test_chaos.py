"""Chaos on the local control plane: the operator SIGKILLed at random moments throughout a
FineTuneJob with an evaluation block, and the API server killed and restarted under a
running job. (A trainer killed mid-run: test_operations.py.)"""
from __future__ import annotations

import collections
import itertools
import json
import os
import random
import signal
import subprocess
import time

import pytest

from kubectl_utils import OPERATOR_BIN, ROOT, STATE, apply, get_json, kubectl, wait_final, wait_for
from resilience_utils import by_owner, condition_of, log_since, tracebacks
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster
# About 25 s of training on the tiny model on 2 idle cores (5 ms a step), longer under the
# restarts; checkpointed, so a retry would resume.
LONG = {"maxSteps": 4000, "batchSize": 4, "learningRate": 0.01, "checkpointEverySteps": 500, "logEverySteps": 50,
        "evalEverySteps": 0}
MIN_KILLS, MAX_KILLS = 10, 24
SEED = int(os.environ.get("KUBETUNE_CHAOS_SEED") or random.SystemRandom().randrange(2**32))


def _evaluation(rows) -> dict:
    dataset = {"path": str(rows), "promptTemplate": "Shout {{ word }}:", "referenceFields": ["upper"], "maxExamples": 8}
    return {"dataset": dataset, "metrics": ["exact_match", "rouge"], "generation": {"maxNewTokens": 3},
            "retention": {"path": str(rows), "promptTemplate": "{{ word }}", "textField": "word", "maxExamples": 8}}


def _moment(namespace: str, name: str) -> str:
    """Where the job stands, in a word or two: the phase, or what follows training."""
    status = (get_json("ftj", name, "-n", namespace) or {}).get("status") or {}
    phase = status.get("phase") or "New"
    if phase == "Succeeded":
        evaluated = condition_of({"status": status}, "Evaluated")
        return f"Succeeded/{evaluated.get('reason') or 'before-evaluation'}"
    return phase


def _assert_one_job_per_attempt(namespace: str, objects: list[dict]) -> None:
    jobs, pods = by_owner("jobs", namespace), by_owner("pods", namespace)
    for obj in objects:
        name, status = obj["metadata"]["name"], obj["status"]
        assert (status["attempt"], status.get("retries", 0)) == (1, 0), (name, status)  # nothing failed: no retry
        assert [j["metadata"]["name"] for j in jobs[name]] == [status["jobName"]], (name, jobs[name])
        assert len(pods[name]) == 1, (name, [p["metadata"]["name"] for p in pods[name]])


def test_operator_killed_at_random_moments_through_a_job_with_evaluation(operator, namespace, tiny_model_dir,
                                                                          rows_file, workdir):
    rng, kills, restarts = random.Random(SEED), [], []
    apply(finetunejob("chaos", namespace, tiny_model_dir, rows_file, workdir / "out", training=LONG,
                      evaluation=_evaluation(rows_file)))
    started = time.monotonic()
    # Until ten kills have happened and the EvalJobs exist (so the kills reach past training),
    # and on while the evaluation runs, up to MAX_KILLS.
    while len(kills) < MAX_KILLS and (len(kills) < MIN_KILLS or condition_of(
            get_json("ftj", "chaos", "-n", namespace) or {}, "Evaluated").get("status") in (None, "Unknown")):
        time.sleep(rng.uniform(1, 4))
        kills.append(_moment(namespace, "chaos"))
        operator.kill()
        began = time.monotonic()
        operator.start()
        restarts.append(time.monotonic() - began)

    ftj = wait_final("ftj", namespace, "chaos", timeout=300)
    ftj = wait_for(lambda: (o := get_json("ftj", "chaos", "-n", namespace)) and
                   condition_of(o, "Evaluated").get("status") in ("True", "False") and o, 120, "the Evaluated condition")
    evaljobs = get_json("evj", "-n", namespace)["items"]
    summary = {"seed": SEED, "kills": len(kills), "killedAt": dict(collections.Counter(kills)),
               "restartSeconds": round(sum(restarts) / len(restarts), 1), "seconds": round(time.monotonic() - started),
               "phase": ftj["status"]["phase"], "evaluated": condition_of(ftj, "Evaluated").get("reason")}
    print(f"\noperator chaos: {json.dumps(summary)}")

    assert len(kills) >= MIN_KILLS and any(k == "Running" for k in kills), kills
    assert ftj["status"]["phase"] == "Succeeded" and condition_of(ftj)["reason"] == "Completed", ftj["status"]
    assert sorted(e["metadata"]["name"] for e in evaljobs) == ["chaos-eval", "chaos-retention"]
    for evj in evaljobs:
        assert evj["status"]["phase"] == "Succeeded", evj["status"]
    _assert_one_job_per_attempt(namespace, [ftj, *evaljobs])
    evaluated = condition_of(ftj, "Evaluated")
    assert (evaluated["status"], evaluated["reason"]) == ("True", "Evaluated"), evaluated
    evaluation = ftj["status"]["evaluation"]
    assert evaluation["evalJob"] == "chaos-eval" and evaluation["retentionEvalJob"] == "chaos-retention"
    assert evaluation["scores"] and evaluation["forgetting"], evaluation


def _kill_api_server() -> int:
    pid = int((STATE / "pids" / "kube-apiserver.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(") ")[1][:1],
             30, "the API server to die")
    return pid


def _cluster_up() -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "hack/cluster/up.sh")], capture_output=True, text=True, timeout=300)


def test_api_server_restarted_under_a_running_job(operator, namespace, tiny_model_dir, rows_file, workdir):
    pid, log_offset = operator.process.pid, operator.log_path.stat().st_size
    apply(finetunejob("apirestart", namespace, tiny_model_dir, rows_file, workdir / "out", training=LONG))
    wait_for(lambda: ((get_json("ftj", "apirestart", "-n", namespace).get("status") or {}).get("progress") or {})
             .get("step", 0) >= 200, 180, "training to be under way")
    try:
        down_at = time.monotonic()
        _kill_api_server()
        time.sleep(5)  # an outage, not a blip: watches break, the trainer's reports fail
        restarted = _cluster_up()
        outage = time.monotonic() - down_at
    finally:
        if kubectl("get", "--raw", "/readyz", check=False).returncode != 0:
            _cluster_up()  # leave the cluster healthy whatever happened
    assert restarted.returncode == 0, restarted.stdout[-2000:] + restarted.stderr[-2000:]
    assert "kube-apiserver: started" in restarted.stdout

    ftj = wait_final("ftj", namespace, "apirestart", timeout=300)
    status = ftj["status"]
    handled = tracebacks(log_since(operator.log_path, log_offset))
    print(f"\napi server restart: {json.dumps({'outageSeconds': round(outage, 1), 'phase': status['phase'], 'attempt': status.get('attempt'), 'operatorTracebacks': len(handled)})}")
    assert status["phase"] == "Succeeded" and condition_of(ftj)["reason"] == "Completed", status
    assert status["progress"]["step"] == LONG["maxSteps"]
    _assert_one_job_per_attempt(namespace, [ftj])
    # The same operator process saw it through: it reconnected its watches and wrote the outcome.
    assert operator.process.poll() is None and operator.process.pid == pid
    assert f'kubetune_finetunejob_progress_ratio{{name="apirestart",namespace="{namespace}"}} 1.0' in operator.metrics()


# The operator's own entry point, with kopf.operator failing once after a while as kopf's run
# fails when a watch gets a 404 from an API server that does not serve the CRDs yet
# (nolar/kopf#1108): all its tasks stop, then the error rises out of it.
KOPF_FAILS_ONCE = """
import asyncio, sys, kopf
from kubetune_operator import main
real, runs = kopf.operator, []
async def fails_once(**kwargs):
    runs.append(1)
    if len(runs) > 1:
        return await real(**kwargs)
    run = asyncio.ensure_future(real(**kwargs))
    await asyncio.sleep(float(sys.argv[1]))
    run.cancel()
    try:
        await run
    except asyncio.CancelledError:
        pass
    raise RuntimeError("404 page not found (injected)")
kopf.operator = fails_once
main.main(sys.argv[2:])
"""


def test_kopf_stopped_by_an_error_starts_again_in_the_same_process(operator, namespace, tiny_model_dir, rows_file, workdir):
    log_offset = operator.log_path.stat().st_size
    operator.stop()
    operator.command = [str(OPERATOR_BIN.parent / "python"), "-c", KOPF_FAILS_ONCE, "10"]
    try:
        operator.start()
        pid = operator.process.pid
        wait_for(lambda: "starting it again" in log_since(operator.log_path, log_offset), 60, "kopf to stop and start again")
        # Its webhook serves again: a spec only the webhook refuses is refused (a new name each
        # try: while kopf pauses, failurePolicy Ignore admits it).
        names = (f"badsplit-{i}" for i in itertools.count())
        bad = lambda: finetunejob(next(names), namespace, tiny_model_dir, rows_file, workdir / "bad",
                                  dataset={"validationRatio": 0.6, "testRatio": 0.5})
        refused = wait_for(lambda: (lambda r: r if r.returncode != 0 else None)(apply(bad(), check=False)), 60,
                           "the restarted webhook to refuse a bad spec")
        assert "dataset.validationRatio + dataset.testRatio must be below 1" in refused.stderr
        # Its handlers and metrics work again: a job runs to the end in the same process.
        apply(finetunejob("afterrestart", namespace, tiny_model_dir, rows_file, workdir / "out"))
        ftj = wait_final("ftj", namespace, "afterrestart", timeout=300)
        assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
        assert operator.process.poll() is None and operator.process.pid == pid
        assert f'kubetune_job_phase{{kind="FineTuneJob",name="afterrestart",namespace="{namespace}",phase="Succeeded"}} 1.0' \
            in operator.metrics()
    finally:
        operator.stop()
        operator.command = [str(OPERATOR_BIN)]
        operator.start()
