"""The validating webhook's decisions, called as kopf calls them: a body, the old body on
UPDATE, the operation. What it refuses comes from preflight (one source of rules); on UPDATE
only spec.suspend may change."""
import asyncio
import copy

import kopf
import pytest

from kubetune_operator import admission, preflight


def _run(handler, **kwargs):
    """A handler as kopf calls it: a coroutine, on an event loop."""
    return asyncio.run(handler(**kwargs))


def _ftj(spec, name="demo"):
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob",
            "metadata": {"name": name, "namespace": "team-a"}, "spec": spec}


def _eval_spec(**change):
    spec = {"models": [{"name": "base", "path": "/models/base"}, {"name": "tuned", "fineTuneJob": "not-there-yet"}],
            "dataset": {"path": "eval.jsonl", "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
            "metrics": ["exact_match"], "output": {"path": "runs/eval-out"}}
    return {**spec, **change}


def _refusal(handler, body, old=None, operation="CREATE"):
    with pytest.raises(kopf.AdmissionError) as caught:
        _run(handler, body=body, old=old, operation=operation, subresource=None)
    assert caught.value.code == 422
    return str(caught.value)


def test_a_valid_finetunejob_is_admitted(spec_dict):
    assert _run(admission.validate_finetunejob, body=_ftj(spec_dict), old=None, operation="CREATE", subresource=None) is None


@pytest.mark.parametrize("change, words", [
    (lambda s: s["dataset"].update(completionTemplate="{{ answer }}"),
     ["InvalidSpec", "spec.dataset", "exactly one of completionField and completionTemplate"]),
    (lambda s: s["dataset"].update(tasks=[{"name": "qa", "path": "qa.jsonl", "promptTemplate": "{{ q }}",
                                           "completionField": "a"}]),
     ["InvalidSpec", "dataset.tasks replaces the single-task fields", "dataset.path"]),
    (lambda s: s["dataset"].update(validationRatio=0.5, testRatio=0.5),
     ["InvalidSpec", "dataset.validationRatio + dataset.testRatio must be below 1"]),
    (lambda s: s.update(method="full", ia3={}), ["InvalidSpec", "ia3", "method is full"]),
    (lambda s: s.update(method="lora", selective={"lastLayers": 1}), ["InvalidSpec", "selective", "method is lora"]),
    (lambda s: s["output"].update(path="../../etc"), ["InvalidSpec", "spec.output.path", "leaves the working directory"]),
    (lambda s: s["output"].update(path="/etc"), ["InvalidSpec", "spec.output.path", "outside the job's writable volumes"]),
], ids=["completion-field-and-template", "path-with-tasks", "ratios", "ia3-on-full", "selective-on-lora",
        "output-escapes", "output-absolute"])
def test_spec_rules_refuse_a_finetunejob_naming_field_and_reason(spec_dict, change, words):
    change(spec_dict)
    message = _refusal(admission.validate_finetunejob, _ftj(spec_dict))
    for word in words:
        assert word in message, message


def test_finetunejob_evaluation_metrics_are_checked_as_its_evaljobs_will_be(spec_dict):
    """The EvalJob the operator creates after training must pass this webhook too: a metric its
    task cannot use is refused up front, before any GPU time is spent."""
    spec_dict["evaluation"] = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ question }}",
                                           "referenceFields": ["answer"]}, "metrics": ["rouge", "perplexity"]}
    message = _refusal(admission.validate_finetunejob, _ftj(spec_dict))
    assert "UnknownMetric: spec.evaluation.metrics: 'perplexity' cannot score task generation" in message, message
    spec_dict["evaluation"]["metrics"] = ["rouge", "exact_match"]
    assert _run(admission.validate_finetunejob, body=_ftj(spec_dict), old=None, operation="CREATE", subresource=None) is None


def test_refusals_are_preflights_own_messages(spec_dict):
    """One source of rules: the webhook says exactly what the operator would put in the condition."""
    spec_dict["dataset"].update(validationRatio=0.7, testRatio=0.4)
    with pytest.raises(preflight.Invalid) as operator_says:
        preflight.validate("demo", spec_dict)
    assert _refusal(admission.validate_finetunejob, _ftj(spec_dict)) == f"InvalidSpec: {operator_says.value}"


def test_name_too_long_for_child_objects_is_refused(spec_dict):
    assert "InvalidName: metadata.name must be at most 52" in _refusal(admission.validate_finetunejob,
                                                                        _ftj(spec_dict, name="x" * 60))


def test_evaljob_is_checked_without_looking_up_its_finetunejobs():
    """A referenced FineTuneJob that does not exist (yet) is the operator's to wait for."""
    assert _run(admission.validate_evaljob, body=_ftj(_eval_spec()), old=None, operation="CREATE", subresource=None) is None


@pytest.mark.parametrize("change, words", [
    ({"metrics": ["rouge", "perplexity"]}, ["UnknownMetric", "spec.metrics", "'perplexity' cannot score task generation"]),
    ({"output": {"path": "../up"}}, ["InvalidSpec", "spec.output.path", "leaves the working directory"]),
    ({"models": [{"name": "base", "path": "/m", "fineTuneJob": "ft"}]}, ["InvalidSpec", "exactly one of path and fineTuneJob"]),
])
def test_evaljob_spec_rules_refuse(change, words):
    message = _refusal(admission.validate_evaljob, _ftj(_eval_spec(**change)))
    for word in words:
        assert word in message, message


def test_update_changing_the_spec_is_refused_naming_the_fields(spec_dict):
    old = _ftj(spec_dict)
    new = copy.deepcopy(old)
    new["spec"]["training"] = {"learningRate": 0.5}
    new["spec"]["output"]["path"] = "runs/other"
    message = _refusal(admission.validate_finetunejob, new, old=old, operation="UPDATE")
    assert message.startswith("SpecImmutable: spec.output.path, spec.training changed;"), message
    assert "only spec.suspend may change after creation" in message and "re-create the FineTuneJob" in message


def test_update_of_a_nested_field_names_that_field(spec_dict):
    spec_dict["training"] = {"learningRate": 0.001, "batchSize": 4}
    old = _ftj(spec_dict)
    new = copy.deepcopy(old)
    new["spec"]["training"]["learningRate"] = 0.01
    message = _refusal(admission.validate_finetunejob, new, old=old, operation="UPDATE")
    assert message.startswith("SpecImmutable: spec.training.learningRate changed;"), message
    evj_old = _ftj(_eval_spec())
    evj_new = _ftj(_eval_spec(metrics=["rouge"]))
    assert "spec.metrics changed" in _refusal(admission.validate_evaljob, evj_new, old=evj_old, operation="UPDATE")


def test_update_of_suspend_metadata_or_status_passes(spec_dict):
    old = _ftj(spec_dict)
    new = copy.deepcopy(old)
    new["spec"]["suspend"] = True
    new["metadata"]["labels"] = {"team": "a"}
    new["metadata"]["annotations"] = {"kubetune.io/last-handled-configuration": "{}"}
    new["status"] = {"phase": "Suspended"}
    assert _run(admission.validate_finetunejob, body=new, old=old, operation="UPDATE", subresource=None) is None
    # Status writes: never refused, even if the main object's spec were different.
    new["spec"]["training"] = {"learningRate": 0.5}
    assert _run(admission.validate_finetunejob, body=new, old=old, operation="UPDATE", subresource="status") is None


def test_update_does_not_recheck_an_unchanged_spec(spec_dict):
    """A job created before the webhook existed (and failed by the operator) must still take
    metadata updates, e.g. a finalizer removed while it is deleted."""
    spec_dict["output"]["path"] = "../../etc"
    old = _ftj(spec_dict)
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    assert _run(admission.validate_finetunejob, body=new, old=old, operation="UPDATE", subresource=None) is None


def test_changed_fields_walks_objects_and_compares_the_rest_whole():
    old = {"a": {"b": 1, "c": [1, 2]}, "d": "x"}
    new = {"a": {"b": 2, "c": [1, 3]}, "e": "y"}
    assert preflight.changed_fields(old, new) == ["spec.a.b", "spec.a.c", "spec.d", "spec.e"]
    assert preflight.immutable_changes({"suspend": False, "x": 1}, {"suspend": True, "x": 1}) == []


def _status_update(username, old_status, new_status, operator="system:serviceaccount:kubetune:kubetune-operator"):
    memo = kopf.Memo(config=type("Settings", (), {"operator_username": operator})())
    _run(admission.validate_status, body={"status": new_status}, old={"status": old_status}, userinfo={"username": username},
                              memo=memo, subresource="status")


@pytest.mark.parametrize("forged", [
    {"phase": "Succeeded", "results": [{"model": "tuned", "scores": {"rougeL": 1.0}}]},  # a forged evaluation
    {"retries": 0, "pods": [], "usage": {"gpuSeconds": 0}},  # the operator's accounting
    {"progress": {"step": 99}},  # even what only shows
])
def test_only_the_operator_writes_status(forged):
    current = {"phase": "Running", "retries": 1}
    for subject in ("system:serviceaccount:tenant-a:tenant-user", "system:serviceaccount:tenant-a:default", "admin"):
        with pytest.raises(kopf.AdmissionError) as caught:
            _status_update(subject, current, {**current, **forged})
        assert caught.value.code == 403 and "written by the operator" in str(caught.value) and subject in str(caught.value)
    _status_update("system:serviceaccount:kubetune:kubetune-operator", current, {**current, **forged})  # admitted


def test_a_status_write_that_changes_nothing_passes_and_no_operator_name_refuses_everyone():
    _status_update("someone", {"phase": "Running"}, {"phase": "Running"})
    with pytest.raises(kopf.AdmissionError):
        _status_update("", {}, {"phase": "Failed"}, operator="")


def test_the_handlers_run_on_kopfs_event_loop_not_in_its_worker_threads():
    """A worker patching a status waits on the API server, which waits on the status webhook:
    answered from the worker threads, a busy pool would wait on itself until the timeout."""
    import inspect

    for handler in (admission.validate_finetunejob, admission.validate_evaljob, admission.validate_status):
        assert inspect.iscoroutinefunction(handler), handler.__name__
