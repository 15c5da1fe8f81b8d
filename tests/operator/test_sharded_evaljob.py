"""Sharded evaluation, the operator's side: an EvalJob with resources.gpu 2 is admitted (within
the policy's and the runtime's GPU limits) and runs one evaluator process in a pod that requests
both GPUs; a FineTuneJob's evaluation.gpu gives its own EvalJobs that many."""
from __future__ import annotations

import pytest

import kubetune_api as api
from kubetune_api.errors import Reason
from kubetune_operator import builders, runtimes
from kubetune_operator.policy import Policy, violations
from kubetune_operator.runtimes import Invalid

NAMESPACE = "team-a"
EVAL = {"models": [{"name": "big", "path": "/models/llama-70b"}], "output": {"path": "out"},
        "dataset": {"path": "/data/eval.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]}}


def _evaljob(**placement) -> api.EvalJobSpec:
    return api.EvalJobSpec.model_validate({**EVAL, **placement})


def _lookup(runtime_spec: dict):
    stored = {("ClusterTrainingRuntime", "gpu"): {"metadata": {"name": "gpu", "generation": 1}, "spec": runtime_spec}}
    return lambda kind, namespace, name: stored.get((kind, name))


def test_an_evaljob_with_two_gpus_runs_one_process_on_both(meta):
    spec = _evaljob(resources={"gpu": 2})
    assert spec.resources.gpu == 2  # the schema takes it (nodes stays 1)
    job = builders.job(meta, builders.EVAL, spec)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    # One process (no accelerate launch): it shards each model across the pod's GPUs itself.
    assert container["command"] == ["kubetune-eval", "--config", "/etc/kubetune/config.yaml"]
    assert job["spec"]["completions"] == 1


def test_an_evaljob_stays_on_one_pod():
    with pytest.raises(ValueError, match="an EvalJob runs on one pod"):
        _evaljob(resources={"gpu": 2, "nodes": 2})


def test_the_policys_gpu_limit_applies_to_evaljobs():
    assert violations(_evaljob(resources={"gpu": 8}), Policy(max_gpus=8)) == []
    (found,) = violations(_evaljob(resources={"gpu": 9}), Policy(max_gpus=8))
    assert found.startswith("spec.resources.gpu: 9 is above the most GPUs per pod")


def test_the_runtimes_gpu_max_applies_and_its_default_gives_an_evaljob_one(meta):
    runtime = {"resources": {"defaults": {"gpu": 4}, "max": {"gpu": 4}}}
    spec = _evaljob(runtime={"name": "gpu"}, resources={"gpu": 4})
    resolved = runtimes.resolve(spec, NAMESPACE, Policy(), _lookup(runtime), lambda ns: {}, eval_job=True)
    container = builders.job(meta, builders.EVAL, spec, runtime=resolved.spec)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    with pytest.raises(Invalid) as refused:
        runtimes.resolve(_evaljob(runtime={"name": "gpu"}, resources={"gpu": 5}), NAMESPACE, Policy(), _lookup(runtime),
                         lambda ns: {}, eval_job=True)
    assert refused.value.reason == Reason.PolicyViolation
    assert "spec.resources.gpu: 5 is above ClusterTrainingRuntime 'gpu''s resources.max.gpu (4 per pod)" in str(refused.value)
    # Unset: one of the runtime's default GPUs (a small model needs no more); sharding is asked for.
    unset = _evaljob(runtime={"name": "gpu"})
    resolved = runtimes.resolve(unset, NAMESPACE, Policy(), _lookup(runtime), lambda ns: {}, eval_job=True)
    container = builders.job(meta, builders.EVAL, unset, runtime=resolved.spec)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}


def test_evaluation_gpu_gives_the_finetunejobs_evaljobs_that_many(meta, spec_dict, tmp_path):
    evaluation = {"dataset": {"path": str(tmp_path / "test.jsonl"), "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
                  "retention": {"path": str(tmp_path / "other.jsonl"), "promptTemplate": "{{ text }}", "textField": "text"},
                  "gpu": 2}
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "evaluation": evaluation, "resources": {"gpu": 8}})
    for evaljob in builders.evaluation_jobs(meta, spec):
        parsed = api.EvalJobSpec.model_validate(evaljob["spec"])  # no stray evaluation.gpu field in the EvalJob
        assert parsed.resources.gpu == 2 and "gpu" not in evaljob["spec"]
        container = builders.job(meta, builders.EVAL, parsed)["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    unset = api.FineTuneJobSpec.model_validate({**spec_dict, "evaluation": {**evaluation, "gpu": None}, "resources": {"gpu": 8}})
    assert {api.EvalJobSpec.model_validate(e["spec"]).resources.gpu for e in builders.evaluation_jobs(meta, unset)} == {1}


def test_the_policy_refuses_an_evaluation_gpu_count_at_apply(spec_dict, tmp_path):
    evaluation = {"dataset": {"path": str(tmp_path / "test.jsonl"), "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
                  "gpu": 16}
    spec = api.FineTuneJobSpec.model_validate({**spec_dict, "evaluation": evaluation})
    (found,) = violations(spec, Policy(max_gpus=8))
    assert found.startswith("spec.evaluation.gpu: 16 is above the most GPUs per pod (policy allowed.maxGpusPerPod: 8)")
