"""spec.tracking on the operator's side: the pods' environment, the evaluation EvalJob's spec,
and status.tracking with the Tracked condition from what the pods report (validated; the URL
is the operator's)."""
import pytest
from pydantic import ValidationError

import kubetune_api as api
from kubetune_api.tracking import CONDITION_TRACKED, MAX_URI, TrackingStatus
from kubetune_operator import builders, followups, pod_reports, tracking
from kubetune_api.reports import PodReport

URI = "https://mlflow.example.com/prefix/"
RUN = "0123456789abcdef0123456789abcdef"


def ftj(spec_dict, meta, **mlflow):
    spec = {**spec_dict, "tracking": {"mlflow": {"uri": URI, **mlflow}}}
    return {"metadata": {**meta, "generation": 1}, "spec": spec, "status": {}}


def env_of(job):
    return {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_pods_get_the_run_key_namespace_and_optional_credentials(meta, spec_dict):
    spec = api.FineTuneJobSpec.model_validate(ftj(spec_dict, meta, credentialsSecret="mlflow-creds")["spec"])
    env = env_of(builders.job(meta, builders.FINETUNE, spec))
    assert env["KUBETUNE_TRACKING_KEY"]["value"] == meta["uid"] and env["KUBETUNE_NAMESPACE"]["value"] == "team-a"
    assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "mlflow-creds", "key": "MLFLOW_TRACKING_TOKEN", "optional": True}}
    assert {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"} <= set(env)
    assert "KUBETUNE_TRACKING_KEY" not in env_of(builders.job(meta, builders.FINETUNE, api.FineTuneJobSpec.model_validate(spec_dict)))


def test_the_evaluation_logs_to_the_fine_tune_jobs_run(meta, spec_dict):
    body = ftj(spec_dict, meta)
    body["spec"]["evaluation"] = {"dataset": {"path": spec_dict["dataset"]["path"], "promptTemplate": "{{ question }}", "referenceFields": ["answer"]}}
    spec = api.FineTuneJobSpec.model_validate(body["spec"])
    (evaljob,) = builders.evaluation_jobs(meta, spec)
    assert evaljob["spec"]["tracking"] == {"mlflow": {"uri": URI, "logModel": True}}
    eval_meta = {**evaljob["metadata"], "uid": "11111111-2222-3333-4444-555555555555"}
    env = env_of(builders.job(eval_meta, builders.EVAL, api.EvalJobSpec.model_validate(evaljob["spec"])))
    assert env["KUBETUNE_TRACKING_KEY"]["value"] == meta["uid"]  # its owner's run, not a run of its own
    assert followups.is_ours({**evaljob, "spec": evaljob["spec"]}, evaljob)


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "http://user:secret@mlflow:5000", "https://mlflow/x@y", "mlflow:5000",
                                 "http://mlflow 5000", "ftp://mlflow", "https://mlflow/api?token=secret",
                                 "https://mlflow/#token=secret", "https://mlflow/" + "p" * 4096])
def test_uris_that_are_not_plain_http_are_refused(spec_dict, meta, uri):
    with pytest.raises(ValidationError):
        api.FineTuneJobSpec.model_validate({**spec_dict, "tracking": {"mlflow": {"uri": uri}}})


def test_the_longest_uri_still_gives_a_url_the_status_takes(spec_dict, meta):
    longest = "https://mlflow.example.com/" + "p" * (MAX_URI - len("https://mlflow.example.com/"))
    spec = {**spec_dict, "tracking": {"mlflow": {"uri": longest}}}
    obj = {"metadata": meta, "spec": api.FineTuneJobSpec.model_validate(spec).model_dump(by_alias=True, mode="json")}
    shown, _ = tracking.mirror(obj, {"tracking": {"runId": RUN, "experimentId": "1234567890123456789"}})
    assert TrackingStatus.model_validate(shown["tracking"]).url.startswith(longest)


def test_registered_model_needs_promotion(spec_dict, meta):
    with pytest.raises(ValidationError, match="registeredModel: needs a promotion block"):
        api.FineTuneJobSpec.model_validate(ftj(spec_dict, meta, registeredModel="animals")["spec"])


def test_a_reported_run_becomes_status_with_the_operators_url(spec_dict, meta):
    shown, changes = tracking.mirror(ftj(spec_dict, meta), {"tracking": {"runId": RUN, "experimentId": "7"}})
    assert shown == {"tracking": {"runId": RUN, "experimentId": "7",
                                  "url": f"https://mlflow.example.com/prefix/#/experiments/7/runs/{RUN}"}}
    assert changes == [(CONDITION_TRACKED, "True", "Tracked", f"logging to MLflow run {RUN}")]


@pytest.mark.parametrize("forged", [
    {"runId": RUN[:-1] + "G", "experimentId": "7"},  # not MLflow's shape
    {"runId": "../../" + RUN, "experimentId": "7"},
    {"runId": RUN, "experimentId": "7 or 1"},
    {"runId": RUN, "experimentId": "7", "url": "https://evil.example/phish"},  # the URL is never the pod's
    {"error": "x" * 100_000},  # a message past the bound
    "not an object",
])
def test_forged_reports_change_nothing(spec_dict, meta, forged):
    assert tracking.mirror(ftj(spec_dict, meta), {"tracking": forged}) == ({}, [])
    assert "tracking" not in pod_reports.validated({"tracking": forged, "metrics": {"trainLoss": 1.0}}, PodReport)


def test_a_failure_is_a_false_tracked_condition_and_never_touches_the_phase(spec_dict, meta):
    shown, changes = tracking.mirror(ftj(spec_dict, meta), {"tracking": {"error": "starting the run: ConnectionError: refused"}})
    ((ctype, status, reason, message),) = changes
    assert shown == {} and (ctype, status, reason) == (CONDITION_TRACKED, "False", "TrackingFailed")
    assert message.startswith(f"tracking to {URI} failed (the job goes on without it): starting the run") and len(message) <= 1024
    assert tracking.mirror({"spec": spec_dict}, {"tracking": {"error": "x"}}) == ({}, [])  # no spec.tracking: nothing


def test_the_promotion_reports_the_version_under_the_specs_name(spec_dict, meta):
    body = ftj(spec_dict, meta, registeredModel="animals")
    body["status"] = {"tracking": {"runId": RUN, "experimentId": "7", "url": "u"}}
    shown, changes = tracking.promoted(body, {"tracking": {"runId": RUN, "modelVersion": "3"}})
    assert shown == {"tracking": {"runId": RUN, "experimentId": "7", "url": "u", "registeredModel": "animals", "modelVersion": "3"}}
    assert changes[0][1:3] == ("True", "Tracked") and "registered animals version 3" in changes[0][3]
    assert tracking.promoted(body, {"tracking": {"modelVersion": "3; drop"}}) == ({}, [])
    assert tracking.promoted(body, {"tracking": {"error": "registering the model: 403"}})[1][0][1] == "False"
