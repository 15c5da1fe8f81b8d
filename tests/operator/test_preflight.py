"""What the schema cannot check is refused with a reason naming the field, row or file."""
import pytest

from kubetune_operator import preflight


def _refused(name, spec):
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate(name, spec)
    return caught.value.reason, str(caught.value)


def test_valid_spec_passes(spec_dict):
    assert preflight.validate("demo", spec_dict).dataset.completion_field == "answer"


def test_missing_dataset_file(spec_dict, tmp_path):
    spec_dict["dataset"]["path"] = str(tmp_path / "nope.jsonl")
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidDataset" and "nope.jsonl" in message


def test_template_naming_a_missing_column(spec_dict):
    spec_dict["dataset"]["promptTemplate"] = "Q: {{ query }}"
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidDataset" and "query" in message


def test_missing_model(spec_dict, tmp_path):
    spec_dict["model"]["path"] = str(tmp_path / "no-such-model")
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidModel" and message.startswith("spec.model.path") and "no-such-model" in message


def test_cross_field_rule_the_schema_cannot_express(spec_dict):
    spec_dict["dataset"].update(validationRatio=0.6, testRatio=0.5)
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidSpec" and "validationRatio + dataset.testRatio" in message


def test_name_too_long_for_child_objects(spec_dict):
    reason, message = _refused("x" * 60, spec_dict)
    assert reason == "InvalidName" and "52" in message


def test_files_on_job_volumes_are_left_to_the_trainer(spec_dict):
    spec_dict["dataset"]["path"] = "/data/rows.jsonl"
    spec_dict["volumes"] = [{"name": "data", "claimName": "datasets", "mountPath": "/data"}]
    assert preflight.validate("demo", spec_dict).dataset.path == "/data/rows.jsonl"


def test_operator_imports_no_ml_framework():
    """The operator image needs no torch: preflight uses only the trainer's light modules."""
    import subprocess
    import sys
    code = ("import sys, kubetune_operator.handlers, kubetune_operator.main; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft', 'accelerate') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def _eval_spec(spec_dict, tmp_path, **models):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(f'{{"question": "q{i}", "answer": "a{i}"}}\n' for i in range(5)))
    return {"models": [{"name": name, **ref} for name, ref in models.items()],
            "dataset": {"path": str(data), "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
            "metrics": ["exact_match"], "output": {"path": str(tmp_path / "eval-out")}}


def _ftj(phase, method="lora", model_path="/out/adapter", message=""):
    return {"spec": {"method": method, "model": {"path": "/models/base"}},
            "status": {"phase": phase, "message": message, "artifacts": {"modelPath": model_path}}}


def test_evaljob_resolves_a_finetunejob_into_base_plus_adapter(spec_dict, tmp_path):
    base = spec_dict["model"]["path"]
    spec = _eval_spec(spec_dict, tmp_path, base={"path": base}, tuned={"fineTuneJob": "ft"})
    _, config = preflight.validate_eval("ev", spec, lookup={"ft": _ftj("Succeeded")}.get)
    assert [(m.name, m.path, m.adapter) for m in config.models] == [("base", base, None), ("tuned", "/models/base", "/out/adapter")]
    _, config = preflight.validate_eval("ev", spec, lookup={"ft": _ftj("Succeeded", method="full", model_path="/out/model")}.get)
    assert (config.models[1].path, config.models[1].adapter) == ("/out/model", None)


@pytest.mark.parametrize("ftj, reason, words", [
    (None, "FineTuneJobNotFound", ["'ft' does not exist"]),
    (_ftj("Failed", message="the trainer exited with code 3"), "FineTuneJobFailed", ["'ft' failed", "code 3"]),
    (_ftj("Running"), "WaitingForFineTuneJob", ["waiting", "Running"]),
])
def test_evaljob_finetunejob_reference_problems(spec_dict, tmp_path, ftj, reason, words):
    spec = _eval_spec(spec_dict, tmp_path, tuned={"fineTuneJob": "ft"})
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", spec, lookup=lambda name: ftj)
    assert caught.value.reason == reason
    assert isinstance(caught.value, preflight.NotReady) == (reason == "WaitingForFineTuneJob")
    for word in words:
        assert word in str(caught.value)


def test_evaljob_dataset_without_the_reference_column(spec_dict, tmp_path):
    spec = _eval_spec(spec_dict, tmp_path, base={"path": spec_dict["model"]["path"]})
    spec["dataset"]["referenceFields"] = ["summary"]
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", spec, lookup=lambda name: None)
    assert caught.value.reason == "InvalidDataset" and "summary" in str(caught.value)


def test_evaljob_model_needs_exactly_one_source(spec_dict, tmp_path):
    spec = _eval_spec(spec_dict, tmp_path, base={"path": "/m", "fineTuneJob": "ft"})
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", spec, lookup=lambda name: None)
    assert caught.value.reason == "InvalidSpec" and "exactly one of path and fineTuneJob" in str(caught.value)


def test_evaljob_metric_the_task_cannot_use(spec_dict, tmp_path):
    spec = _eval_spec(spec_dict, tmp_path, base={"path": spec_dict["model"]["path"]})
    spec["metrics"] = ["rouge", "perplexity"]
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", spec, lookup=lambda name: None)
    assert caught.value.reason == "UnknownMetric" and "'perplexity' cannot score task generation" in str(caught.value)
