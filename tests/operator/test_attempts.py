"""Which failures earn another attempt: the classification of pod failures, and the verdict."""
import pytest

from kubetune_api import Phase
from kubetune_operator import attempts, observe


def _failed_pod(code=None, reason=None, pod_reason=None, message="", conditions=(), report=None):
    terminated = {"exitCode": code, "message": report or ""} if code is not None else None
    if terminated and reason:
        terminated["reason"] = reason
    status = {"phase": "Failed", "conditions": list(conditions)}
    if pod_reason:
        status.update(reason=pod_reason, message=message)
    if terminated:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": terminated}}]
    return {"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": status}


def _classify(pod):
    return attempts.classify(pod, observe.describe_failure(pod))


@pytest.mark.parametrize("pod, reason", [
    (_failed_pod(137, reason="Error"), "KilledBySignal"),  # SIGKILL, not the OOM killer
    (_failed_pod(143, reason="Error"), "KilledBySignal"),  # SIGTERM: node drain, preemption on 1.20
    (_failed_pod(pod_reason="Evicted", message="The node was low on resource: ephemeral-storage."), "Evicted"),
    (_failed_pod(pod_reason="NodeLost", message="node went away"), "NodeLost"),
    (_failed_pod(137, conditions=[{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                                   "message": "preempted by a higher priority pod"}]), "Preempted"),
    (_failed_pod(), "PodFailed"),  # failed before its container ran
])
def test_infrastructure_failures(pod, reason):
    failure = _classify(pod)
    assert (failure["class"], failure["reason"]) == ("infrastructure", reason)


@pytest.mark.parametrize("pod, reason", [
    (_failed_pod(137, reason="OOMKilled"), "OOMKilled"),
    (_failed_pod(3, report='{"reason": "InvalidDataset", "error": "row 7: no field answer"}'), "InvalidDataset"),
    (_failed_pod(1, report='{"error": "ValueError: nan loss"}'), "TrainerFailed"),
])
def test_user_failures(pod, reason):
    failure = _classify(pod)
    assert (failure["class"], failure["reason"]) == ("user", reason)


def test_a_signal_kill_names_the_signal():
    assert "SIGKILL" in _classify(_failed_pod(137, reason="Error"))["message"]
    assert "SIGTERM" in _classify(_failed_pod(143, reason="Error"))["message"]


def test_a_running_or_succeeded_pod_is_no_failure():
    ok = {"metadata": {"name": "p"}, "status": {"phase": "Succeeded", "containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": 0}}}]}}
    assert _classify(ok) is None


def test_job_failures_without_a_pod():
    deadline = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]}}
    lost = {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}}
    assert attempts.job_failure(deadline)["class"] == "user"
    assert attempts.job_failure(lost)["class"] == "infrastructure"
    assert attempts.job_failure({"status": {}}) is None


def test_infrastructure_failures_retry_until_the_limit():
    failure = {"class": "infrastructure", "reason": "Evicted", "message": "low on memory"}
    first = attempts.decide(failure, attempt=1, retries=0, backoff_limit=2)
    assert first.retry and first.phase == Phase.Running and first.reason == "Retrying"
    assert "attempt 2 resumes from the latest checkpoint" in first.message and first.failure["attempt"] == 1
    last = attempts.decide(failure, attempt=3, retries=2, backoff_limit=2)
    assert not last.retry and (last.phase, last.reason) == (Phase.Failed, "Evicted")
    assert "no retries left (backoffLimit 2)" in last.message


def test_user_failures_never_retry():
    verdict = attempts.decide({"class": "user", "reason": "OOMKilled", "message": "ran out of memory"}, 1, 0, 5)
    assert not verdict.retry and (verdict.phase, verdict.reason) == (Phase.Failed, "OOMKilled")


def test_attempt_job_names_are_deterministic():
    assert [attempts.job_name("demo-train", n) for n in (1, 2, 3)] == ["demo-train", "demo-train-2", "demo-train-3"]
    assert attempts.attempt_of({"metadata": {"labels": {attempts.ATTEMPT_LABEL: "4"}}}) == 4
    assert attempts.attempt_of({"metadata": {}}) == 1


@pytest.mark.parametrize("message, phase, reason", [
    ('pods "demo-train-x" is forbidden: no PriorityClass with name nosuch was found', Phase.Failed, "PodRejected"),
    ('pods "demo-train-x" is forbidden: exceeded quota: gpus, requested: nvidia.com/gpu=1', Phase.Pending, "QuotaExceeded"),
    ('Internal error occurred: failed calling webhook: context deadline exceeded: timeout', Phase.Pending, "JobCreated"),
])
def test_pod_creation_refusals(message, phase, reason):
    events = [{"message": "older", "lastTimestamp": "2026-01-01T00:00:00Z"},
              {"message": message, "lastTimestamp": "2026-01-01T00:01:00Z"}]
    refusal = observe.creation_refusal(events)
    assert refusal[:2] == (phase, reason) and message in refusal[2]
    assert observe.creation_refusal([]) is None


def test_a_rank_failing_after_its_peer_vanished_is_an_infrastructure_failure():
    """Multi-node: rank 0 exits 1 on a closed connection because a worker's node went away."""
    closed = {"class": "user", "reason": "TrainerFailed", "message": "the trainer exited with code 1: connection closed by peer"}
    records = [{"name": "demo-train-x", "attempt": 2}, {"name": "demo-train-2-w1-y", "attempt": 2, "lost": True}]
    failure = attempts.peer_lost(closed, records, attempt=2)
    assert (failure["class"], failure["reason"]) == ("infrastructure", "PodLost")
    assert "demo-train-2-w1-y" in failure["message"] and "connection closed by peer" in failure["message"]
    assert attempts.peer_lost(closed, records, attempt=3) == closed  # a pod lost in an earlier attempt
    oom = {"class": "user", "reason": "OOMKilled", "message": "ran out of memory"}
    assert attempts.peer_lost(oom, records, attempt=2) == oom


def test_the_ledger_marks_a_pod_that_vanished_while_running():
    from kubetune_operator import ledger

    pod = {"metadata": {"name": "w1", "labels": {attempts.ATTEMPT_LABEL: "1"}}, "spec": {"containers": []},
           "status": {"containerStatuses": [{"state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}
    records = ledger.update(ledger.update([], [pod], "2026-01-01T00:01:00Z"), [], "2026-01-01T00:02:00Z")
    assert records[0]["lost"] is True and records[0]["running"] is False
