"""status.usage from the pod ledger: every attempt, running pods to now, GPUs from the limits,
and pods that are gone (a suspend deleted them) still counted."""
from kubetune_api.base import MAX_RECORDS
from kubetune_operator import ledger
from kubetune_operator.main import parse_args

NOW = "2026-01-01T01:00:00Z"


def _pod(gpus, state, created="2026-01-01T00:00:00Z", name=None, attempt=1):
    limits = {"nvidia.com/gpu": str(gpus), "memory": "8Gi"} if gpus else {"memory": "8Gi"}
    _pod.count = getattr(_pod, "count", 0) + 1
    return {"metadata": {"creationTimestamp": created, "name": name or f"pod-{_pod.count}",
                         "labels": {"kubetune.io/attempt": str(attempt)}},
            "spec": {"containers": [{"name": "trainer", "resources": {"limits": limits, "requests": limits}}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": state}]}}


def _terminated(start, end, code=0):
    return {"terminated": {"exitCode": code, "startedAt": start, "finishedAt": end}}


def test_retries_and_a_running_pod_all_count():
    pods = [_pod(2, _terminated("2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z", code=137)),  # preempted
            _pod(2, _terminated("2026-01-01T00:12:00Z", "2026-01-01T00:20:00Z", code=1)),
            _pod(2, {"running": {"startedAt": "2026-01-01T00:30:00Z"}})]  # runs until NOW
    assert ledger.usage(ledger.update([], pods, NOW)) == {
        "gpuSeconds": 2 * (600 + 480 + 1800), "podSeconds": 600 + 480 + 1800, "attempts": 3}


def test_tokens_of_every_attempt_count_and_a_pod_cannot_lower_its_count():
    first = _pod(1, _terminated("2026-01-01T00:00:00Z", "2026-01-01T00:10:00Z", code=137), name="a1", attempt=1)
    second = _pod(1, {"running": {"startedAt": "2026-01-01T00:12:00Z"}}, name="a2", attempt=2)
    records = ledger.count_tokens(ledger.update([], [first], NOW), "a1", {"trainTokens": 200})
    # Attempt 2 resumed from a checkpoint that held 120 tokens: it trained 17 so far.
    records = ledger.count_tokens(ledger.update(records, [first, second], NOW), "a2", {"trainTokens": 137, "resumedTokens": 120})
    assert ledger.usage(records)["trainingTokens"] == 200 + 17
    records = ledger.count_tokens(ledger.update(records, [second], NOW), "a2", {"trainTokens": 0})  # a forged report
    assert ledger.usage(records)["trainingTokens"] == 217  # the first pod is gone, its tokens stay
    assert ledger.count_tokens(records, "a2", {"trainTokens": "many"}) == records


def test_pods_that_never_started_are_not_attempts():
    pods = [_pod(1, {"waiting": {"reason": "ImagePullBackOff"}}), _pod(1, {}),
            _pod(1, {"terminated": {"exitCode": 128, "reason": "ContainerCannotRun"}})]
    assert ledger.usage(ledger.update([], pods, NOW)) == {"gpuSeconds": 0, "podSeconds": 0, "attempts": 0}


def test_cpu_pods_use_no_gpu_seconds_and_a_price_gives_the_cost():
    pods = [_pod(0, _terminated("2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z")),
            _pod(4, _terminated("2026-01-01T00:00:00Z", "2026-01-01T00:30:00Z"))]
    usage = ledger.usage(ledger.update([], pods, NOW), gpu_hour_price=2.5, currency="EUR")
    assert usage == {"gpuSeconds": 7200, "podSeconds": 3600, "attempts": 2, "estimatedCost": 5.0, "currency": "EUR"}


def test_pricing_settings_from_flags_and_environment(monkeypatch):
    assert (parse_args([]).gpu_hour_price, parse_args([]).currency) == (None, "USD")
    settings = parse_args(["--gpu-hour-price", "3.2", "--currency", "EUR"])
    assert (settings.gpu_hour_price, settings.currency) == (3.2, "EUR")
    monkeypatch.setenv("KUBETUNE_GPU_HOUR_PRICE", "1.5")
    assert parse_args([]).gpu_hour_price == 1.5


def test_a_pod_deleted_while_running_keeps_its_time_until_last_seen():
    """Suspend deletes the Job and its pod: the run before the suspend still counts, once."""
    running = _pod(1, {"running": {"startedAt": "2026-01-01T00:00:00Z"}}, name="demo-train-x", attempt=1)
    records = ledger.update([], [running], "2026-01-01T00:10:00Z")
    records = ledger.update(records, [], "2026-01-01T00:20:00Z")  # gone: no time after it was last seen
    assert records[0]["running"] is False and records[0]["finishedAt"] == "2026-01-01T00:10:00Z"
    resumed = _pod(1, {"running": {"startedAt": "2026-01-01T00:30:00Z"}}, name="demo-train-2-y", attempt=2)
    records = ledger.update(records, [resumed], NOW)
    records = ledger.update(records, [resumed], NOW)  # seen twice: counted once
    assert [r["attempt"] for r in records] == [1, 2]
    assert ledger.usage(records) == {"gpuSeconds": 600 + 1800, "podSeconds": 600 + 1800, "attempts": 2}


def test_the_ledger_is_bounded():
    pods = [_pod(0, _terminated("2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"), name=f"p{i}")
            for i in range(MAX_RECORDS + 5)]
    assert len(ledger.update([], pods, NOW)) == MAX_RECORDS
