"""Operations on the local control plane: retries that resume after an infrastructure
failure, user errors that never retry, suspend and resume, TTL, and pods the cluster refuses."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kubectl_utils import apply, condition, events_for, get_json, jobs_in, kubectl, succeeded_condition, wait_final, wait_for
from test_finetunejob import finetunejob

pytestmark = pytest.mark.cluster
# Long enough to be stopped midway (tiny model, a few ms per step), checkpointed often.
LONG = {"maxSteps": 1500, "batchSize": 4, "learningRate": 0.01, "checkpointEverySteps": 100, "logEverySteps": 10,
        "evalEverySteps": 0}


def _pods(namespace: str) -> list[dict]:
    return json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]


def _running_pod(namespace: str) -> dict:
    return wait_for(lambda: next((p for p in _pods(namespace) if p["status"].get("phase") == "Running"), None),
                    120, "a running trainer pod")


def _step(namespace: str, name: str) -> int:
    return ((get_json("ftj", name, "-n", namespace) or {}).get("status", {}).get("progress") or {}).get("step", 0)


def _kill_container(pod_name: str, sig: int = signal.SIGKILL) -> int:
    """Kills the pod's processes as a node losing them would (the node agent runs pods as host
    processes; each carries its pod's name in POD_NAME)."""
    killed = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"POD_NAME={pod_name}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), sig)
                killed += 1
        except (OSError, ProcessLookupError):
            continue
    return killed


def test_a_killed_trainer_is_retried_and_resumes_from_its_checkpoint(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("chaos", namespace, tiny_model_dir, rows_file, workdir / "out", training=LONG, backoffLimit=2))
    pod = _running_pod(namespace)
    wait_for(lambda: _step(namespace, "chaos") >= 250, 180, "training past two checkpoints")
    assert _kill_container(pod["metadata"]["name"]) >= 1
    ftj = wait_final("ftj", namespace, "chaos", timeout=400)
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert (status["attempt"], status["retries"]) == (2, 1)
    failure = status["lastFailure"]
    assert (failure["class"], failure["reason"], failure["attempt"], failure["exitCode"]) == ("infrastructure", "KilledBySignal", 1, 137)
    assert "SIGKILL" in failure["message"] and "the latest checkpoint is at step" in failure["message"]
    # It lost at most one checkpoint interval of steps.
    assert status["progress"]["resumedFromStep"] >= 200 and status["progress"]["step"] == 1500
    assert sorted(j["metadata"]["name"] for j in jobs_in(namespace)) == ["chaos-train", "chaos-train-2"]
    assert status["usage"]["attempts"] == 2 and [p["attempt"] for p in status["pods"]] == [1, 2]
    assert ("Warning", "Retrying") in events_for(namespace, "chaos")


def test_a_user_error_fails_at_once_with_no_second_attempt(operator, namespace, tiny_model_dir, workdir):
    rows = workdir / "bad.jsonl"
    rows.parent.mkdir(parents=True, exist_ok=True)
    rows.write_text('{"word": "red"}\n')  # no completion field
    apply(finetunejob("userr", namespace, tiny_model_dir, rows, workdir / "out", backoffLimit=3))
    ftj = wait_final("ftj", namespace, "userr")
    assert (ftj["status"]["phase"], succeeded_condition(ftj)["reason"]) == ("Failed", "InvalidDataset")
    assert ftj["status"]["lastFailure"]["class"] == "user" and ftj["status"].get("retries", 0) == 0
    assert [j["metadata"]["name"] for j in jobs_in(namespace)] == ["userr-train"]
    assert len(_pods(namespace)) == 1


def test_suspend_stops_the_pods_and_resume_continues_from_the_checkpoint(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("pause", namespace, tiny_model_dir, rows_file, workdir / "out", training=LONG))
    _running_pod(namespace)
    wait_for(lambda: _step(namespace, "pause") >= 250, 180, "training past two checkpoints")
    kubectl("patch", "ftj", "pause", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": true}}')
    ftj = wait_for(lambda: (o := get_json("ftj", "pause", "-n", namespace))["status"].get("phase") == "Suspended" and o, 60, "Suspended")
    assert (condition(ftj, "Suspended")["status"], condition(ftj, "Suspended")["reason"]) == ("True", "Suspended")
    wait_for(lambda: not _pods(namespace) and not jobs_in(namespace), 90, "the pod and Job to go")
    suspended_seconds = get_json("ftj", "pause", "-n", namespace)["status"]["usage"]["podSeconds"]
    assert suspended_seconds > 0

    kubectl("patch", "ftj", "pause", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    ftj = wait_final("ftj", namespace, "pause", timeout=400)
    status = ftj["status"]
    assert status["phase"] == "Succeeded", status
    assert status["attempt"] == 2 and status.get("retries", 0) == 0
    assert status["progress"]["resumedFromStep"] >= 200
    assert (condition(ftj, "Suspended")["status"], condition(ftj, "Suspended")["reason"]) == ("False", "Resumed")
    assert status["usage"]["attempts"] == 2 and status["usage"]["podSeconds"] > suspended_seconds
    events = events_for(namespace, "pause")
    assert ("Normal", "Suspended") in events and ("Normal", "Resumed") in events


def test_created_suspended_runs_nothing_until_resumed(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("later", namespace, tiny_model_dir, rows_file, workdir / "out", suspend=True))
    wait_for(lambda: get_json("ftj", "later", "-n", namespace).get("status", {}).get("phase") == "Suspended", 60, "Suspended")
    assert not jobs_in(namespace)
    kubectl("patch", "ftj", "later", "-n", namespace, "--type=merge", "-p", '{"spec": {"suspend": false}}')
    ftj = wait_final("ftj", namespace, "later")
    assert ftj["status"]["phase"] == "Succeeded" and ftj["status"]["attempt"] == 1
    assert [j["metadata"]["name"] for j in jobs_in(namespace)] == ["later-train"]


def test_ttl_deletes_a_finished_job_and_keeps_its_outputs(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("brief", namespace, tiny_model_dir, rows_file, workdir / "out", ttlSecondsAfterFinished=2))
    wait_for(lambda: (get_json("ftj", "brief", "-n", namespace) or {}).get("status", {}).get("phase") == "Succeeded",
             300, "Succeeded")
    wait_for(lambda: get_json("ftj", "brief", "-n", namespace) is None, 60, "the FineTuneJob to be deleted")
    wait_for(lambda: get_json("job", "brief-train", "-n", namespace) is None, 60, "its Job to be collected")
    assert (workdir / "out" / "training_summary.json").exists()


def test_a_pod_the_cluster_refuses_fails_with_the_apis_reason(operator, namespace, tiny_model_dir, rows_file, workdir):
    apply(finetunejob("noprio", namespace, tiny_model_dir, rows_file, workdir / "out", priorityClassName="nosuch"))
    ftj = wait_final("ftj", namespace, "noprio", timeout=120)
    cond = succeeded_condition(ftj)
    assert (ftj["status"]["phase"], cond["reason"]) == ("Failed", "PodRejected")
    assert "no PriorityClass with name nosuch" in cond["message"]
    assert not _pods(namespace)
