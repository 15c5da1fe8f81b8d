"""Specs that used to be admitted and fail (or quietly do something else) much later, refused
at apply naming the field: a FineTuneJob evaluation metric that is not built in (its EvalJob
runs only after training), a selective.lastLayers beyond any model, and training.epochs beside
maxSteps (which decides alone). Both through the webhook's `review` and the CRD schema, and the
e2e generator's cases for them (tests/e2e/malformed_specs.py) are refused here too."""
import sys
from pathlib import Path

import kopf
import pytest

import kubetune_api as api
from kubetune_api import crdgen
from kubetune_api.catalog import BUILTIN_METRICS
from kubetune_api.resources import FineTuneJobSpec, EvalJobSpec
from kubetune_operator import admission, shared
from kubetune_operator.settings import OperatorSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from malformed_specs import Specs, contradictory, out_of_bounds  # noqa: E402

EVALUATION = {"dataset": {"path": "eval.jsonl", "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]}}


def _review(spec, kind="FineTuneJob"):
    admission.review(kind, {"metadata": {"name": "demo"}, "spec": spec}, None, "CREATE")


def _refusal(spec, kind="FineTuneJob") -> str:
    with pytest.raises(kopf.AdmissionError) as caught:
        _review(spec, kind)
    return str(caught.value)


def test_an_evaluation_metric_that_is_not_built_in_is_refused(spec_dict):
    spec_dict["evaluation"] = {**EVALUATION, "metrics": ["exact_match", "no_such_metric"]}
    message = _refusal(spec_dict)
    assert "spec.evaluation.metrics.1" in message and "'token_f1'" in message, message
    # The schema lists the registry's names, so the API server refuses it first (spec.evaluation.metrics[1]).
    items = crdgen.schema_of(FineTuneJobSpec)["properties"]["evaluation"]["properties"]["metrics"]["items"]
    assert items == {"type": "string", "enum": list(BUILTIN_METRICS)}


def test_an_evaluation_metric_for_another_task_names_no_evaluate_fallback(spec_dict):
    spec_dict["evaluation"] = {**EVALUATION, "metrics": ["rouge", "accuracy"]}
    message = _refusal(spec_dict)
    assert "UnknownMetric: spec.evaluation.metrics: 'accuracy' cannot score task generation" in message, message
    assert "evaluate" not in message, message
    spec_dict["evaluation"]["metrics"] = ["rouge", "token_f1"]
    _review(spec_dict)


def test_an_evaljob_names_an_evaluate_metric_only_when_the_operator_allows_it(monkeypatch):
    """An evaluate metric runs a script in the pod: refused at apply unless the operator's
    settings (KUBETUNE_ALLOWED_EVALUATE_METRICS) name it; the schema cannot list them."""
    spec = {"models": [{"name": "base", "path": "/models/base"}], "metrics": ["exact_match", "meteor"],
            "dataset": EVALUATION["dataset"], "output": {"path": "runs/eval-out"}}
    message = _refusal(spec, "EvalJob")
    assert "UnknownMetric" in message and "spec.metrics" in message and "'meteor'" in message and "none allowed" in message
    monkeypatch.setattr(shared.config, "settings", OperatorSettings(allowed_evaluate_metrics=("meteor",)))
    _review(spec, "EvalJob")
    assert "enum" not in crdgen.schema_of(EvalJobSpec)["properties"]["metrics"]["items"]


def test_an_allowed_evaluate_metric_reaches_only_evaluator_pods(meta, spec_dict):
    from kubetune_operator import builders

    spec = api.EvalJobSpec.model_validate({"models": [{"name": "base", "path": "/m"}], "metrics": ["meteor"],
                                           "dataset": EVALUATION["dataset"], "output": {"path": "o"}})
    env = builders.job(meta, builders.EVAL, spec, evaluate_metrics=("meteor", "chrf"))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "KUBETUNE_ALLOWED_EVALUATE_METRICS", "value": "meteor,chrf"} in env
    trainer = builders.job(meta, builders.FINETUNE, api.FineTuneJobSpec.model_validate(spec_dict), evaluate_metrics=("meteor",))
    # Set, and empty, in every other pod: a runtime's envFrom (a tenant's Secret) cannot supply it.
    assert {"name": "KUBETUNE_ALLOWED_EVALUATE_METRICS", "value": ""} in trainer["spec"]["template"]["spec"]["containers"][0]["env"]


def test_selective_last_layers_beyond_any_model_is_refused(spec_dict):
    spec_dict.update(method="selective", selective={"lastLayers": 1024})
    message = _refusal(spec_dict)
    assert "spec.selective.lastLayers" in message and "256" in message, message
    spec_dict["selective"]["lastLayers"] = 256  # the model's own depth is the trainer's to check
    _review(spec_dict)
    last_layers = crdgen.schema_of(FineTuneJobSpec)["properties"]["selective"]["properties"]["lastLayers"]
    assert last_layers["maximum"] == 256 and "126" in last_layers["description"]


@pytest.mark.parametrize("epochs", [1e-300, 0.5, 2])
def test_epochs_beside_max_steps_is_refused(spec_dict, epochs):
    spec_dict["training"] = {"epochs": epochs, "maxSteps": 10}
    message = _refusal(spec_dict)
    assert "InvalidSpec: spec.training: set one of training.epochs and training.maxSteps" in message, message


@pytest.mark.parametrize("training", [{"epochs": 2}, {"maxSteps": 10}, {"epochs": 1.0, "maxSteps": 10}],
                         ids=["epochs", "max-steps", "default-epochs-as-the-api-server-fills-it"])
def test_one_length_is_admitted(spec_dict, training):
    spec_dict["training"] = training
    _review(spec_dict)


def test_the_e2e_cases_for_these_are_refused_at_apply():
    s = Specs("/models/base", "rows.jsonl", "runs/out")
    cases = [c for c in (*contradictory(s), *out_of_bounds(s))
             if any(word in c.what for word in ("no_such_metric", "with maxSteps", "lastLayers 1024"))]
    assert len(cases) == 4
    for case in cases:
        assert "spec." in _refusal(case.spec), case.what
