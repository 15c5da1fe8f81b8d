"""Pod lifecycle decisions and the reported status: container states, restart policy,
phase, conditions and their transition times, restoring after an agent restart."""
from __future__ import annotations

from pathlib import Path

import pytest

from node_agent import lifecycle
from node_agent.env import image_bindir
from node_agent.lifecycle import (Conditions, Container, after_exit, build_status, end_states,
                                  exit_code_of, main_phase, ran_before, restore)


def ctr(name="main", init=False, **spec) -> Container:
    return Container({"name": name, "image": "img:1", **spec}, init)


def ran(c: Container, returncode: int, message: str = "") -> Container:
    """c ran once and exited with Popen's returncode."""
    c.launched("2024-01-01T00:00:00Z")
    c.exited(returncode, message, "2024-01-01T00:00:05Z")
    return c


def cond(status: dict, ctype: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == ctype)


# -- containers --------------------------------------------------------------------------
@pytest.mark.parametrize("rc, code", [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_code_of(rc, code):
    assert exit_code_of(rc) == code


def test_new_container_waits_in_container_creating():
    st = ctr().status()
    assert st["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert st["ready"] is False and st["restartCount"] == 0 and "containerID" not in st
    assert st["image"] == "img:1"
    assert st["imageID"].startswith(f"local://{Path(image_bindir('img:1')).parent}@")  # the stand-in venv


def test_running_then_exited_states():
    c = ctr()
    c.launched("T0")
    st = c.status()
    assert st["state"] == {"running": {"startedAt": "T0"}}
    assert st["ready"] is st["started"] is True
    assert st["containerID"] == "kubetune://main-1"
    c.exited(-9, "killed", "T1")
    assert c.state == {"terminated": {
        "exitCode": 137, "reason": "Error", "signal": 9, "message": "killed",
        "startedAt": "T0", "finishedAt": "T1", "containerID": "kubetune://main-1"}}
    assert c.exit_code == 137


def test_clean_exit_is_completed_without_message_or_signal():
    c = ran(ctr(), 0)
    assert c.state["terminated"]["reason"] == "Completed"
    assert "message" not in c.state["terminated"] and "signal" not in c.state["terminated"]


def test_waiting_only_while_no_process_runs():
    c = ctr()
    c.waiting("CreateContainerConfigError", "no key")
    assert c.state == {"waiting": {"reason": "CreateContainerConfigError", "message": "no key"}}
    c.waiting("PodInitializing")
    assert c.state == {"waiting": {"reason": "PodInitializing"}}
    c.launched("T0")
    c.proc = object()
    c.waiting("PodInitializing")
    assert "running" in c.state


def test_start_error_only_replaces_waiting():
    waiting, done = ctr("a"), ran(ctr("b"), 0)
    for c in (waiting, done):
        c.start_error("no command")
    assert waiting.state["terminated"]["reason"] == "StartError"
    assert waiting.state["terminated"]["exitCode"] == 128
    assert waiting.state["terminated"]["message"] == "no command"
    assert done.state["terminated"]["reason"] == "Completed"


# -- restart policy ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy, code, restarts", [
    ("Always", 0, True), ("Always", 1, True),
    ("OnFailure", 0, False), ("OnFailure", 1, True),
    ("Never", 0, False), ("Never", 1, False),
])
def test_main_container_restart_policy(policy, code, restarts):
    c = ran(ctr(), code)
    assert after_exit(c, code, policy, killing=False, now_m=100.0) is False
    assert c.done is not restarts
    if restarts:
        assert c.state["waiting"]["reason"] == "CrashLoopBackOff"
        assert c.last_state["terminated"]["exitCode"] == code
        assert c.next_start == 101.0


def test_nothing_restarts_while_killing():
    c = ran(ctr(), 1)
    assert after_exit(c, 1, "Always", killing=True, now_m=0) is False
    assert c.done and "terminated" in c.state


def test_backoff_doubles_up_to_ten_seconds_and_counts_restarts():
    c = ctr()
    delays = []
    for _ in range(6):
        c.launched("T")
        c.exited(1, "", "T")
        after_exit(c, 1, "Always", False, now_m=0.0)
        delays.append(c.next_start)
    assert delays == [1, 2, 4, 8, 10, 10]
    assert c.restart_count == 5 and c.status()["containerID"] == "kubetune://main-6"


def test_init_containers():
    ok = ran(ctr("init", init=True), 0)
    assert after_exit(ok, 0, "Never", False, 0) is False and ok.done
    failed = ran(ctr("init", init=True), 2)
    assert after_exit(failed, 2, "Never", False, 0) is True and failed.done  # fails the pod
    retried = ran(ctr("init", init=True), 2)
    assert after_exit(retried, 2, "OnFailure", False, 0) is False and not retried.done


# -- phase ------------------------------------------------------------------------------------
def test_main_phase():
    a, b = ctr("a"), ctr("b")
    assert main_phase([a, b]) is None
    a.launched("T")
    assert main_phase([a, b]) == "Running"
    for c, rc in ((a, 0), (b, 0)):
        c.exited(rc, "", "T")
        c.done = True
    assert main_phase([a, b]) == "Succeeded"
    b.exited(1, "", "T")
    assert main_phase([a, b]) == "Failed"


def test_end_states_marks_lost_processes():
    running, waiting = ctr("r"), ctr("w")
    running.launched("T0")
    end_states([running, waiting])
    assert running.state["terminated"]["reason"] == "ContainerStatusUnknown"
    assert running.state["terminated"]["exitCode"] == 137
    assert running.state["terminated"]["startedAt"] == "T0"
    assert "waiting" in waiting.state
    assert running.done and waiting.done


# -- agent restarts -----------------------------------------------------------------------------
@pytest.mark.parametrize("status, expected", [
    ({}, False),
    ({"phase": "Pending"}, False),
    ({"phase": "Running"}, True),
    ({"containerStatuses": [{"state": {"waiting": {}}}]}, False),
    ({"containerStatuses": [{"state": {"terminated": {}}}]}, True),
    ({"initContainerStatuses": [{"state": {"running": {}}}]}, True),
])
def test_ran_before(status, expected):
    assert ran_before(status) is expected


def test_restore_carries_reported_states_over():
    init, main, new = ctr("init", init=True), ctr("main"), ctr("new")
    restore([init, main, new], {
        "initContainerStatuses": [{"name": "init", "state": {"terminated": {"exitCode": 0}}}],
        "containerStatuses": [{"name": "main", "restartCount": 2,
                               "state": {"running": {"startedAt": "T0"}}}]})
    assert init.exit_code == 0 and init.runs == 1
    assert main.restart_count == 2 and main.state == {"running": {"startedAt": "T0"}}
    assert new.runs == 0 and "waiting" in new.state


# -- conditions and the whole status ------------------------------------------------------------
def test_condition_transition_time_moves_only_on_flips(monkeypatch):
    clock = iter(["T1", "T2", "T3"])
    monkeypatch.setattr(lifecycle, "now", lambda: next(clock))
    conds = Conditions([{"type": "Ready", "status": "False", "lastTransitionTime": "T0"}])
    assert conds.get("Ready", False, "ContainersNotReady") == {
        "type": "Ready", "status": "False", "lastTransitionTime": "T0", "lastProbeTime": None,
        "reason": "ContainersNotReady"}
    assert conds.get("Ready", True, "ContainersNotReady")["lastTransitionTime"] == "T1"
    ready = conds.get("Ready", True, "ContainersNotReady")
    assert ready["lastTransitionTime"] == "T1" and "reason" not in ready
    assert conds.get("Ready", False)["lastTransitionTime"] == "T2"
    assert conds.get("PodScheduled", True)["lastTransitionTime"] == "T3"


def test_status_of_a_running_pod():
    init, main = ran(ctr("init", init=True), 0), ctr("main")
    init.done = True
    main.launched("T0")
    st = build_status("Running", [init], [main], Conditions([]), start_time="S",
                      ip="127.0.0.5", qos="BestEffort")
    assert st["phase"] == "Running" and st["hostIP"] == "127.0.0.1"
    assert st["podIP"] == "127.0.0.5" and st["podIPs"] == [{"ip": "127.0.0.5"}]
    assert st["startTime"] == "S" and st["qosClass"] == "BestEffort"
    assert [c["name"] for c in st["containerStatuses"]] == ["main"]
    assert [c["name"] for c in st["initContainerStatuses"]] == ["init"]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Initialized": "True", "Ready": "True", "ContainersReady": "True", "PodScheduled": "True"}
    assert "reason" not in st and "message" not in st


def test_status_of_a_pending_pod_with_unfinished_init():
    init, main = ctr("init", init=True), ctr("main")
    st = build_status("Pending", [init], [main], Conditions([]))
    assert cond(st, "Initialized") | {"lastTransitionTime": None} == {
        "type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
        "lastTransitionTime": None, "lastProbeTime": None}
    assert cond(st, "Ready")["reason"] == "ContainersNotReady"
    assert "podIP" not in st and "startTime" not in st and "qosClass" not in st


def test_status_of_a_finished_pod():
    main = ran(ctr(), 1, "boom")
    main.done = True
    st = build_status("Failed", [], [main], Conditions([]), reason="DeadlineExceeded",
                      message="too long")
    assert st["reason"] == "DeadlineExceeded" and st["message"] == "too long"
    assert cond(st, "Ready")["status"] == "False"
    assert cond(st, "Ready")["reason"] == cond(st, "ContainersReady")["reason"] == "PodCompleted"
    assert cond(st, "Initialized")["status"] == "True"   # no init containers
    assert "initContainerStatuses" not in st
    assert st["containerStatuses"][0]["state"]["terminated"]["message"] == "boom"
