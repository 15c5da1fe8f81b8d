"""A FineTuneJob's evaluation is mirrored only from the EvalJobs its evaluation block made
(owner uid and spec), only once its training succeeded; a look-alike is ignored, said in an
event, and fails the gate's input."""
import copy

import pytest

from kubetune_operator import builders, followups, kube, preflight, reconcile

EVALUATION = {"dataset": {"path": "eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}


@pytest.fixture
def world(monkeypatch, meta, spec_dict):
    """A fake API holding one FineTuneJob and the EvalJobs in its namespace."""
    ftj = {"metadata": {**meta, "generation": 1}, "spec": {**spec_dict, "evaluation": EVALUATION},
           "status": {"phase": "Succeeded", "conditions": []}}
    objects = {("finetunejobs", "demo"): ftj}
    events = []
    monkeypatch.setattr(kube, "read_object", lambda plural, namespace, name: copy.deepcopy(objects.get((plural, name))))
    monkeypatch.setattr(kube, "patch_status", lambda plural, namespace, name, status: objects[(plural, name)].setdefault(
        "status", {}).update(copy.deepcopy(status)))
    monkeypatch.setattr(followups.kopf, "event", lambda obj, type, reason, message: events.append((type, reason)))
    return objects, events


def _ours(objects, scores):
    (wanted,) = builders.evaluation_jobs(objects[("finetunejobs", "demo")]["metadata"],
                                         followups.api.FineTuneJobSpec.model_validate(objects[("finetunejobs", "demo")]["spec"]))
    evaljob = copy.deepcopy(wanted)
    evaljob["status"] = {"phase": "Succeeded", "results": [{"model": "base", "scores": {}},
                                                          {"model": "tuned", "scores": scores, "delta": scores}]}
    return evaljob


def _evaluated(objects):
    ftj = objects[("finetunejobs", "demo")]
    return next(c for c in ftj["status"]["conditions"] if c["type"] == "Evaluated"), ftj["status"]["evaluation"]


def test_the_operators_own_evaljob_is_mirrored(world):
    objects, events = world
    objects[("evaljobs", "demo-eval")] = _ours(objects, {"rougeL": 0.4})
    followups.mirror_evaluation("team-a", "demo")
    condition, evaluation = _evaluated(objects)
    assert condition["status"] == "True" and evaluation["scores"] == {"rougeL": 0.4}


@pytest.mark.parametrize("forge", [
    lambda job: job["metadata"].update(ownerReferences=[]),  # a label and a name only
    lambda job: job["spec"]["dataset"].update(path="easy.jsonl"),  # even with the owner reference copied: another spec
])
def test_a_look_alike_is_ignored_with_an_event(world, forge):
    objects, events = world
    look_alike = _ours(objects, {"rougeL": 1.0})
    forge(look_alike)
    objects[("evaljobs", "demo-eval")] = look_alike
    followups.mirror_evaluation("team-a", "demo")
    condition, evaluation = _evaluated(objects)
    assert (condition["status"], condition["reason"]) == ("False", "EvaluationFailed")
    assert "not created by this FineTuneJob" in condition["message"] and "scores" not in evaluation
    assert ("Warning", "ForeignEvalJob") in events


def test_nothing_is_mirrored_before_training_succeeded(world):
    objects, _ = world
    objects[("finetunejobs", "demo")]["status"]["phase"] = "Running"
    objects[("evaljobs", "demo-eval")] = _ours(objects, {"rougeL": 1.0})
    followups.mirror_evaluation("team-a", "demo")
    assert "evaluation" not in objects[("finetunejobs", "demo")]["status"]


def test_an_attempt_never_runs_a_spec_changed_after_launch(spec_dict):
    obj = {"spec": dict(spec_dict), "status": {"specDigest": preflight.spec_digest(spec_dict)}}
    assert reconcile.spec_changed(obj) is None
    assert reconcile.spec_changed({**obj, "spec": {**spec_dict, "suspend": True}}) is None  # the one mutable field
    assert "changed after the job was admitted" in reconcile.spec_changed({**obj, "spec": {**spec_dict, "image": "evil:1"}})
    assert reconcile.spec_changed({"spec": spec_dict, "status": {}}) is None  # launched before digests existed
