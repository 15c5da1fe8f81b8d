"""Prometheus output as a scraper sees it (real exposition format, parsed back)."""
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
