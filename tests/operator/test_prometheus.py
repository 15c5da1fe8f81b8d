"""Prometheus output as a scraper sees it (real exposition format, parsed back)."""
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kubetune_operator import metrics


def _samples():
    text = generate_latest(metrics.REGISTRY).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_per_job_series_follow_status_and_disappear_on_delete():
    metrics.observe_finetunejob("ns", "a", {"phase": "Running", "progress": {"percent": 25.0, "tokensPerSecond": 300.0},
                                           "metrics": {"trainLoss": 1.5, "validationLoss": 1.7, "validationAccuracy": 0.4}})
    metrics.observe_finetunejob("ns", "b", {"phase": "Succeeded"})
    samples = _samples()
    assert samples[("kubetune_finetunejob_progress_ratio", (("name", "a"), ("namespace", "ns")))] == 0.25
    assert samples[("kubetune_finetunejob_loss", (("name", "a"), ("namespace", "ns"), ("split", "validation")))] == 1.7
    assert samples[("kubetune_finetunejob_tokens_per_second", (("name", "a"), ("namespace", "ns")))] == 300.0
    assert samples[("kubetune_finetunejobs", (("phase", "Running"),))] == 1
    assert samples[("kubetune_finetunejobs", (("phase", "Succeeded"),))] == 1

    metrics.forget_finetunejob("ns", "a")
    samples = _samples()
    assert ("kubetune_finetunejob_progress_ratio", (("name", "a"), ("namespace", "ns"))) not in samples
    assert samples[("kubetune_finetunejobs", (("phase", "Running"),))] == 0
    metrics.forget_finetunejob("ns", "b")


def test_duration_histogram_counts_each_final_job():
    before = _samples().get(("kubetune_finetunejob_duration_seconds_count", (("phase", "Failed"),)), 0)
    metrics.observe_duration("Failed", 120.0)
    samples = _samples()
    assert samples[("kubetune_finetunejob_duration_seconds_count", (("phase", "Failed"),))] == before + 1
    assert samples[("kubetune_finetunejob_duration_seconds_bucket", (("le", "300.0"), ("phase", "Failed")))] >= 1
