"""Job and pod states -> FineTuneJob phase and Succeeded condition."""
import json

from kubetune_operator import observe
from kubetune_api import Phase


def _job(*conditions, start="2026-01-01T00:00:00Z", completion=None):
    status = {"startTime": start, "conditions": [
        {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": "2026-01-01T01:00:00Z"}
        for t, r, m in conditions]}
    if completion:
        status["completionTime"] = completion
    return {"metadata": {"name": "demo-train"}, "status": status}


def _pod(phase, state=None, created="2026-01-01T00:00:01Z", conditions=(), start="2026-01-01T00:00:05Z", container="trainer"):
    status = {"phase": phase, "conditions": list(conditions), "startTime": start}
    if state:
        status["containerStatuses"] = [{"name": container, "state": state}]
    return {"metadata": {"creationTimestamp": created}, "status": status}


def test_no_pod_yet_is_pending():
    seen = observe.observe(_job(), [])
    assert (seen.phase, seen.reason, seen.condition_status) == (Phase.Pending, "JobCreated", "Unknown")


def test_unschedulable_pod_says_why():
    pod = _pod("Pending", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                        "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."}])
    seen = observe.observe(_job(), [pod])
    assert seen.phase == Phase.Pending and seen.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in seen.message


def test_image_pull_failure_is_reported():
    pod = _pod("Pending", state={"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image x"}})
    seen = observe.observe(_job(), [pod])
    assert seen.reason == "ImagePullBackOff" and "pulling image" in seen.message


def test_running_pod_is_running():
    seen = observe.observe(_job(), [_pod("Running", state={"running": {}})])
    assert (seen.phase, seen.reason, seen.start_time) == (Phase.Running, "Running", "2026-01-01T00:00:00Z")


def test_success_reads_the_trainer_summary():
    summary = {"metrics": {"trainLoss": 0.4321}, "artifacts": {"modelPath": "/out/adapter"}}
    pod = _pod("Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(summary)}})
    seen = observe.observe(_job(("Complete", "", ""), completion="2026-01-01T00:30:00Z"), [pod])
    assert (seen.phase, seen.reason, seen.condition_status) == (Phase.Succeeded, "Completed", "True")
    assert seen.completion_time == "2026-01-01T00:30:00Z"
    assert seen.report == summary
    assert "0.4321" in seen.message and "/out/adapter" in seen.message


def test_exit_code_and_trainer_error_reach_the_message():
    message = json.dumps({"error": "DataError: rows.jsonl row 3: missing field 'answer'"})
    pod = _pod("Failed", state={"terminated": {"exitCode": 3, "reason": "Error", "message": message}})
    seen = observe.observe(_job(("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")), [pod])
    assert (seen.phase, seen.reason, seen.condition_status) == (Phase.Failed, "TrainerFailed", "False")
    assert "code 3" in seen.message and "row 3: missing field 'answer'" in seen.message


def test_log_fallback_uses_the_last_line():
    pod = _pod("Failed", state={"terminated": {"exitCode": 1, "reason": "Error", "message": "loading\nTraceback\nKeyError: 'x'\n"}})
    seen = observe.observe(_job(("Failed", "BackoffLimitExceeded", "")), [pod])
    assert seen.message == "the trainer exited with code 1: KeyError: 'x'"


def test_evaluator_failure_and_success_are_named_for_the_evaluator():
    pod = _pod("Failed", state={"terminated": {"exitCode": 3, "message": '{"error": "DataError: no column summary"}'}}, container="evaluator")
    seen = observe.observe(_job(("Failed", "BackoffLimitExceeded", "")), [pod])
    assert (seen.reason, seen.message) == ("EvaluatorFailed", "the evaluator exited with code 3: DataError: no column summary")
    report = {"results": [{"model": "base", "scores": {"rougeL": 0.21}}, {"model": "tuned", "scores": {"rougeL": 0.3456}}]}
    assert observe.success_message(report) == "evaluation finished; base: rougeL 0.2100; tuned: rougeL 0.3456"


def test_out_of_memory():
    pod = _pod("Failed", state={"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    seen = observe.observe(_job(("Failed", "BackoffLimitExceeded", "")), [pod])
    assert seen.reason == "OOMKilled" and "memory" in seen.message


def test_deadline_exceeded_keeps_the_job_reason():
    pod = _pod("Failed", state={"terminated": {"exitCode": 143, "reason": "Error"}})
    seen = observe.observe(_job(("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")), [pod])
    assert seen.reason == "DeadlineExceeded" and "deadline" in seen.message


def test_a_failed_pod_ends_its_attempt_before_the_job_controller_says_so():
    """One pod per attempt: its failure is the attempt's, and the pod goes to the operator to classify."""
    failed = _pod("Failed", state={"terminated": {"exitCode": 1, "message": '{"error": "boom"}'}}, created="2026-01-01T00:00:01Z")
    seen = observe.observe(_job(), [failed])
    assert (seen.phase, seen.reason) == (Phase.Failed, "TrainerFailed") and "boom" in seen.message
    assert seen.failed_pod is failed


def _evaljob(phase, tuned_scores=None, delta=None, message=""):
    results = [{"model": "base", "scores": {}}, {"model": "tuned", "scores": tuned_scores or {}, "delta": delta or {}}]
    return {"status": {"phase": phase, "message": message, "results": results if tuned_scores else []}}


def test_evaluation_summary_waits_then_reports_scores_and_forgetting():
    summary, verdict = observe.evaluation_summary("j-eval", None, "j-retention", None)
    assert verdict[:2] == ("Unknown", "EvaluationPending")
    summary, verdict = observe.evaluation_summary("j-eval", _evaljob("Running"), "j-retention", _evaljob("Pending"))
    assert verdict[:2] == ("Unknown", "Evaluating") and summary["phase"] == "Running"
    summary, verdict = observe.evaluation_summary(
        "j-eval", _evaljob("Succeeded", {"rougeL": 0.31}, {"rougeL": 0.05}),
        "j-retention", _evaljob("Succeeded", {"perplexity": 12.0}, {"perplexity": 1.5}))
    assert summary == {"evalJob": "j-eval", "phase": "Succeeded", "scores": {"rougeL": 0.31}, "delta": {"rougeL": 0.05},
                       "retentionEvalJob": "j-retention", "retentionPhase": "Succeeded", "forgetting": {"perplexity": 1.5}}
    assert verdict == ("True", "Evaluated", "tuned vs base: rougeL +0.0500; on retention data: perplexity +1.5000")


def test_evaluation_summary_counts_contaminated_rows_and_says_so():
    evaljob = _evaljob("Succeeded", {"rougeL": 0.31}, {"rougeL": 0.05})
    evaljob["status"]["contamination"] = {"action": "flag", "ngram": 13, "rows": 40, "overlapping": 3}
    summary, verdict = observe.evaluation_summary("j-eval", evaljob, None, None)
    assert summary["contaminatedRows"] == 3
    assert verdict[2] == "tuned vs base: rougeL +0.0500; 3 evaluation rows overlap the training data (EvalJob status.contamination)"


def test_evaluation_summary_names_the_models_whose_predictions_were_reused():
    evaljob = _evaljob("Succeeded", {"rougeL": 0.31}, {"rougeL": 0.05})
    evaljob["status"]["results"][0]["cached"] = True
    summary, verdict = observe.evaluation_summary("j-eval", evaljob, None, None)
    assert summary["cachedModels"] == ["base"]
    assert verdict[2] == "tuned vs base: rougeL +0.0500; predictions of base reused from an earlier evaluation"


def test_evaluation_summary_fails_with_the_evaljob_message():
    _, verdict = observe.evaluation_summary("j-eval", _evaljob("Failed", message="the evaluator exited with code 3"), None, None)
    assert verdict == ("False", "EvaluationFailed", "EvalJob j-eval failed: the evaluator exited with code 3")


def test_the_pods_own_reason_names_the_failure():
    message = json.dumps({"error": "DataError: rows.jsonl line 4: no column 'answer'", "reason": "InvalidDataset"})
    pod = _pod("Failed", state={"terminated": {"exitCode": 3, "message": message}})
    seen = observe.observe(_job(("Failed", "BackoffLimitExceeded", "")), [pod])
    assert seen.reason == "InvalidDataset" and "line 4" in seen.message


# -- lineage: the image the pod ran ---------------------------------------------------------
def _merge(target, patch):
    """RFC 7386 JSON merge patch, as the API server applies the status patches."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def test_the_trainer_image_is_the_image_id_else_the_image():
    statuses = {"name": "trainer", "state": {"running": {}}, "image": "ghcr.io/kubetune/trainer:0.1.0"}
    pod = _pod("Running", state={"running": {}})
    pod["status"]["containerStatuses"] = [{**statuses, "imageID": "ghcr.io/kubetune/trainer@sha256:abc"}]
    assert observe.trainer_image([pod]) == "ghcr.io/kubetune/trainer@sha256:abc"
    pod["status"]["containerStatuses"] = [{**statuses, "imageID": ""}]
    assert observe.trainer_image([pod]) == "ghcr.io/kubetune/trainer:0.1.0"
    assert observe.trainer_image([_pod("Pending")]) is None and observe.trainer_image([]) is None


def test_the_image_id_lands_in_status_lineage_image_next_to_what_the_pod_reported():
    from kubetune_operator import reconcile
    from kubetune_operator.builders import FINETUNE

    pod_lineage = {"datasets": [{"role": "train", "uri": "rows.jsonl", "sha256": "ab" * 32, "rows": 3}],
                   "configHash": "sha256:" + "cd" * 32}
    obj = {"metadata": {"name": "demo", "generation": 1}, "status": {"lineage": pod_lineage}}
    seen = observe.observe(_job(), [_pod("Running", state={"running": {}})])
    patch = reconcile._status_patch(FINETUNE, obj, seen, {"lineage": pod_lineage}, "ghcr.io/kubetune/trainer@sha256:abc")
    status = _merge(obj["status"], patch)
    assert status["lineage"] == {**pod_lineage, "image": "ghcr.io/kubetune/trainer@sha256:abc"}
    # A later report adds to the lineage and keeps the image; an unchanged lineage is not patched again.
    later = {**pod_lineage, "versions": {"torch": "2.13.0"}}
    status = _merge(status, reconcile._status_patch(FINETUNE, {**obj, "status": status}, seen, {"lineage": later},
                                                    "ghcr.io/kubetune/trainer@sha256:abc"))
    assert status["lineage"] == {**later, "image": "ghcr.io/kubetune/trainer@sha256:abc"}
    again = reconcile._status_patch(FINETUNE, {**obj, "status": status}, seen, {"lineage": later}, "ghcr.io/kubetune/trainer@sha256:abc")
    assert "lineage" not in again



def test_a_job_kueue_holds_is_queued_and_runs_once_admitted():
    held = {**_job(start=None), "spec": {"suspend": True}}
    held["metadata"] = {"name": "demo-train", "namespace": "team-a", "uid": "u1",
                        "labels": {"kueue.x-k8s.io/queue-name": "team-a-queue"}}
    seen = observe.observe(held, [])
    assert (seen.phase, seen.reason) == (Phase.Queued, "Queued") and "team-a-queue" in seen.message
    admitted = {**held, "spec": {"suspend": False}}
    assert observe.observe(admitted, [_pod("Running", state={"running": {}})]).phase == Phase.Running
