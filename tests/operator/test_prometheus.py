"""Prometheus output as a scraper sees it (real exposition format, parsed back)."""
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune_operator import metrics


def _samples():
    text = generate_latest(metrics.REGISTRY).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _phase(kind, phase):
    return ("kubetune_jobs", (("kind", kind), ("phase", phase)))


def test_finetunejob_series_follow_status_and_disappear_on_delete():
    metrics.observe_finetunejob("ns", "a", {"phase": "Running", "progress": {"percent": 25.0, "tokensPerSecond": 300.0},
                                           "metrics": {"trainLoss": 1.5, "validationLoss": 1.7, "validationAccuracy": 0.4}})
    metrics.observe_finetunejob("ns", "b", {"phase": "Succeeded"})
    samples = _samples()
    assert samples[("kubetune_finetunejob_progress_ratio", (("name", "a"), ("namespace", "ns")))] == 0.25
    assert samples[("kubetune_finetunejob_loss", (("name", "a"), ("namespace", "ns"), ("split", "validation")))] == 1.7
    assert samples[("kubetune_finetunejob_tokens_per_second", (("name", "a"), ("namespace", "ns")))] == 300.0
    assert samples[_phase("FineTuneJob", "Running")] == 1 and samples[_phase("FineTuneJob", "Succeeded")] == 1

    metrics.forget("FineTuneJob", "ns", "a")
    samples = _samples()
    assert ("kubetune_finetunejob_progress_ratio", (("name", "a"), ("namespace", "ns"))) not in samples
    assert samples[_phase("FineTuneJob", "Running")] == 0
    metrics.forget("FineTuneJob", "ns", "b")


def test_evaljob_scores_per_model_and_metric():
    status = {"phase": "Succeeded", "progress": {"percent": 100.0},
              "results": [{"model": "base", "scores": {"rougeL": 0.2, "bleu": 5.0}},
                          {"model": "tuned", "scores": {"rougeL": 0.3, "bleu": 9.0}}]}
    metrics.observe_evaljob("ns", "e", status)
    samples = _samples()
    assert samples[("kubetune_evaljob_score", (("metric", "rougeL"), ("model", "tuned"), ("name", "e"), ("namespace", "ns")))] == 0.3
    assert samples[("kubetune_evaljob_progress_ratio", (("name", "e"), ("namespace", "ns")))] == 1.0
    assert samples[_phase("EvalJob", "Succeeded")] == 1
    # A metric that leaves the results leaves the scrape.
    metrics.observe_evaljob("ns", "e", {**status, "results": [{"model": "tuned", "scores": {"rougeL": 0.3}}]})
    samples = _samples()
    assert ("kubetune_evaljob_score", (("metric", "bleu"), ("model", "base"), ("name", "e"), ("namespace", "ns"))) not in samples
    metrics.forget("EvalJob", "ns", "e")
    assert not [k for k in _samples() if k[0] == "kubetune_evaljob_score"]


def test_duration_histogram_counts_each_final_job():
    key = ("kubetune_job_duration_seconds_count", (("kind", "FineTuneJob"), ("phase", "Failed")))
    before = _samples().get(key, 0)
    metrics.observe_duration("FineTuneJob", "Failed", 120.0)
    samples = _samples()
    assert samples[key] == before + 1
    assert samples[("kubetune_job_duration_seconds_bucket", (("kind", "FineTuneJob"), ("le", "300.0"), ("phase", "Failed")))] >= 1


def test_final_phase_counts_failures_by_reason_and_gpu_seconds_by_namespace():
    failures = ("kubetune_job_failures_total", (("kind", "FineTuneJob"), ("namespace", "acct"), ("reason", "InvalidModel")))
    gpu = ("kubetune_gpu_seconds_total", (("kind", "FineTuneJob"), ("namespace", "acct")))
    metrics.observe_finetunejob("acct", "x", {"phase": "Running"})
    assert _samples()[gpu] == 0  # exists from the job's first sight, so increase() sees the first job
    assert failures not in _samples()
    metrics.observe_final("FineTuneJob", "acct", "Failed", "InvalidModel", 30.0, {"gpuSeconds": 2 * 30.0})
    metrics.observe_final("FineTuneJob", "acct", "Succeeded", "Completed", 100.0, {"gpuSeconds": 4 * 100.0})
    metrics.observe_final("FineTuneJob", "acct", "Failed", "InvalidModel", None)  # refused without a pod
    samples = _samples()
    assert samples[failures] == 2
    assert not [k for k in samples if k[0] == "kubetune_job_failures_total" and ("reason", "Completed") in k[1]]
    assert samples[gpu] == 2 * 30.0 + 4 * 100.0
    metrics.forget("FineTuneJob", "acct", "x")
    assert _samples()[gpu] == 460.0  # counters keep what deleted jobs added


def test_usage_counts_pod_seconds_cost_and_gpu_seconds_of_every_attempt():
    labels = (("kind", "FineTuneJob"), ("namespace", "bill"))
    cost = ("kubetune_estimated_cost_total", (("currency", "EUR"), *labels))
    metrics.set_currency("EUR")
    try:
        metrics.observe_finetunejob("bill", "y", {"phase": "Running"})
        assert _samples()[("kubetune_pod_seconds_total", labels)] == 0 and _samples()[cost] == 0
        usage = {"gpuSeconds": 7200.0, "podSeconds": 3600.0, "attempts": 2, "estimatedCost": 5.0, "currency": "EUR"}
        metrics.observe_final("FineTuneJob", "bill", "Succeeded", "Completed", 1800.0, usage)
    finally:
        metrics.set_currency(None)
    samples = _samples()
    assert samples[("kubetune_gpu_seconds_total", labels)] == 7200.0  # every attempt, from the usage
    assert samples[("kubetune_pod_seconds_total", labels)] == 3600.0 and samples[cost] == 5.0
    metrics.forget("FineTuneJob", "bill", "y")


def test_promotions_are_counted_by_outcome():
    def promotions():
        return {dict(k[1])["outcome"]: v for k, v in _samples().items()
                if k[0] == "kubetune_promotions_total" and dict(k[1])["namespace"] == "promo"}
    metrics.observe_finetunejob("promo", "z", {"phase": "Succeeded"})
    assert promotions() == {"promoted": 0, "gate_failed": 0, "failed": 0}
    metrics.observe_promotion("promo", "gate_failed")
    metrics.observe_promotion("promo", "promoted")
    assert promotions() == {"promoted": 1, "gate_failed": 1, "failed": 0}
    metrics.forget("FineTuneJob", "promo", "z")


def test_per_job_phase_series_follows_the_job():
    def phases():
        return {dict(k[1])["phase"]: v for k, v in _samples().items()
                if k[0] == "kubetune_job_phase" and dict(k[1])["name"] == "p"}
    metrics.observe_finetunejob("ph", "p", {"phase": "Pending"})
    assert phases() == {"Pending": 1}
    metrics.observe_finetunejob("ph", "p", {"phase": "Running"})
    assert phases() == {"Running": 1}
    metrics.forget("FineTuneJob", "ph", "p")
    assert phases() == {}


@pytest.mark.parametrize("kind", ["FineTuneJob", "EvalJob"])
def test_queued_and_suspended_jobs_are_counted_in_their_phase(kind):
    observe = metrics.observe_finetunejob if kind == "FineTuneJob" else metrics.observe_evaljob

    def fleet():
        return {dict(k[1])["phase"]: v for k, v in _samples().items()
                if k[0] == "kubetune_jobs" and dict(k[1])["kind"] == kind}
    before = fleet()
    assert {"Queued", "Suspended"} <= set(before)
    observe("qs", "q", {"phase": "Queued"})
    observe("qs", "s", {"phase": "Suspended"})
    after = fleet()
    assert (after["Queued"] - before["Queued"], after["Suspended"] - before["Suspended"]) == (1, 1)
    metrics.forget(kind, "qs", "q")
    metrics.forget(kind, "qs", "s")
    assert fleet()["Queued"] == before["Queued"]


def test_eta_evaluation_delta_and_forgetting_mirror_the_status():
    key = (("name", "t"), ("namespace", "ev"))
    status = {"phase": "Succeeded", "progress": {"percent": 100.0, "etaSeconds": 0.0},
              "evaluation": {"delta": {"rougeL": 0.25, "exactMatch": -0.05}, "forgetting": {"perplexity": 1.5}}}
    metrics.observe_finetunejob("ev", "t", {"phase": "Running", "progress": {"percent": 50.0, "etaSeconds": 42.5}})
    assert _samples()[("kubetune_finetunejob_eta_seconds", key)] == 42.5
    metrics.observe_finetunejob("ev", "t", status)
    samples = _samples()
    assert samples[("kubetune_finetunejob_evaluation_delta", (("metric", "exactMatch"), *key))] == -0.05
    assert samples[("kubetune_finetunejob_forgetting", (("metric", "perplexity"), *key))] == 1.5
    # A metric that leaves status.evaluation leaves the scrape; delete drops the rest.
    metrics.observe_finetunejob("ev", "t", {**status, "evaluation": {"delta": {"rougeL": 0.25}}})
    samples = _samples()
    assert ("kubetune_finetunejob_evaluation_delta", (("metric", "exactMatch"), *key)) not in samples
    assert ("kubetune_finetunejob_forgetting", (("metric", "perplexity"), *key)) not in samples
    metrics.forget("FineTuneJob", "ev", "t")
    assert not [k for k in _samples() if k[0].startswith("kubetune_finetunejob_") and dict(k[1]).get("namespace") == "ev"]


def test_reconcile_latency_and_errors_by_kind_and_handler():
    import kopf
    import pytest
    from kubetune_operator import preflight

    def count(name, handler, kind="EvalJob"):
        return _samples().get((name, (("handler", handler), ("kind", kind))))
    assert count("kubetune_reconcile_errors_total", "launch", "FineTuneJob") == 0  # exported before any error
    before = (count("kubetune_reconcile_duration_seconds_count", "sync") or 0, count("kubetune_reconcile_errors_total", "sync"))

    class Workload:
        kind = "EvalJob"

    @metrics.timed("sync")
    def handler(workload, fail=None, wait=False):
        if wait:  # as launch_evaljob waits for a FineTuneJob: a planned retry, not an error
            try:
                raise preflight.NotReady("WaitingForFineTuneJob", "training")
            except preflight.NotReady as waiting:
                raise kopf.TemporaryError(str(waiting), delay=10)
        if fail:
            raise fail

    handler(Workload())
    with pytest.raises(RuntimeError):
        handler(Workload(), RuntimeError("API down"))
    with pytest.raises(kopf.TemporaryError):
        handler(Workload(), wait=True)
    assert count("kubetune_reconcile_duration_seconds_count", "sync") == before[0] + 3
    assert count("kubetune_reconcile_errors_total", "sync") == before[1] + 1


def test_build_info():
    from importlib.metadata import version
    import platform
    info = [(dict(k[1]), v) for k, v in _samples().items() if k[0] == "kubetune_build_info"]
    assert info == [({"version": version("kubetune"), "python": platform.python_version(), "kopf": version("kopf")}, 1.0)]


def test_score_series_per_job_are_capped_and_the_drop_is_said_once():
    big = {"phase": "Succeeded", "results": [{"model": "tuned", "scores": {f"m{i}": 1.0 for i in range(500)}}]}
    assert metrics.observe_evaljob("ns", "big", big) == 500 - metrics.MAX_SERIES_PER_JOB
    assert metrics.observe_evaljob("ns", "big", big) == 0  # the same drop is not news
    assert len([k for k in _samples() if k[0] == "kubetune_evaljob_score" and ("name", "big") in k[1]]) == metrics.MAX_SERIES_PER_JOB
    evaluation = {"phase": "Succeeded", "evaluation": {"delta": {f"m{i}": 0.1 for i in range(100)}}}
    assert metrics.observe_finetunejob("ns", "ft", evaluation) == 100 - metrics.MAX_SERIES_PER_JOB
    metrics.forget("EvalJob", "ns", "big")
    metrics.forget("FineTuneJob", "ns", "ft")
    assert not [k for k in _samples() if ("name", "big") in k[1] or ("name", "ft") in k[1]]


def test_a_failure_reason_that_is_not_the_apis_is_counted_as_other():
    metrics.observe_final("EvalJob", "tenant", "Failed", "x" * 300, None)
    metrics.observe_final("EvalJob", "tenant", "Failed", "Evicted", None)
    reasons = {dict(k[1])["reason"] for k in _samples() if k[0] == "kubetune_job_failures_total" and ("namespace", "tenant") in k[1]}
    assert reasons == {"Other", "Evicted"}
