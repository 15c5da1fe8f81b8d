"""What the schema cannot check but the spec alone decides is refused with a reason naming the field."""
import pytest

from kubetune_operator import preflight


def _refused(name, spec):
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate(name, spec)
    return caught.value.reason, str(caught.value)


def test_valid_spec_passes(spec_dict):
    assert preflight.validate("demo", spec_dict).dataset.completion_field == "answer"


def test_operator_opens_no_file_and_renders_no_template(spec_dict, tmp_path):
    """Files and templates are the pod's to check: a spec naming files the operator cannot see
    and a hostile template pass preflight untouched, and nothing in the template runs."""
    proof = tmp_path / "proof"
    spec_dict["dataset"]["path"] = str(tmp_path / "nope.jsonl")
    spec_dict["dataset"]["promptTemplate"] = (
        "{{ cycler.__init__.__globals__.os.popen('id > " + str(proof) + "').read() }}"
        "{% for i in range(999999999) %}x{% endfor %}{{ question }}")
    spec_dict["model"]["path"] = str(tmp_path / "no-such-model")
    parsed = preflight.validate("demo", spec_dict)
    assert parsed.dataset.path.endswith("nope.jsonl") and not proof.exists()


@pytest.mark.parametrize("output, volumes, words", [
    ("../../etc", [], ["spec.output.path", "leaves the working directory"]),
    ("runs/../../etc", [], ["spec.output.path", "leaves the working directory"]),
    ("/etc", [], ["spec.output.path", "outside the job's writable volumes (none)"]),
    ("/data/../etc/out", [{"name": "data", "claimName": "data", "mountPath": "/data"}], ["outside the job's writable volumes (/data)"]),
    ("/models/out", [{"name": "m", "claimName": "models", "mountPath": "/models", "readOnly": True}], ["outside", "readOnly"]),
])
def test_output_paths_that_escape_are_refused(spec_dict, output, volumes, words):
    spec_dict["output"]["path"] = output
    spec_dict["volumes"] = volumes
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidSpec"
    for word in words:
        assert word in message


@pytest.mark.parametrize("output", ["runs/out", "./out/../out2", "/outputs/run-1", "/outputs"])
def test_output_paths_inside_allowed_roots_pass(spec_dict, output):
    spec_dict["output"]["path"] = output
    spec_dict["volumes"] = [{"name": "out", "claimName": "outputs", "mountPath": "/outputs"}]
    assert preflight.validate("demo", spec_dict).output.path == output


def test_object_references_must_be_kubernetes_names(spec_dict, tmp_path):
    spec_dict["volumes"] = [{"name": "data", "claimName": "../../secrets", "mountPath": "/data"}]
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidSpec" and "spec.volumes.0.claimName" in message
    spec = _eval_spec(spec_dict, tmp_path, tuned={"fineTuneJob": "../../etc"})
    looked_up = []
    with pytest.raises(preflight.Invalid) as caught:
        preflight.validate_eval("ev", spec, lookup=looked_up.append)
    assert caught.value.reason == "InvalidSpec" and "fineTuneJob" in str(caught.value) and looked_up == []


def test_cross_field_rule_the_schema_cannot_express(spec_dict):
    spec_dict["dataset"].update(validationRatio=0.6, testRatio=0.5)
    reason, message = _refused("demo", spec_dict)
    assert reason == "InvalidSpec" and "validationRatio + dataset.testRatio" in message


def test_name_too_long_for_child_objects(spec_dict):
    reason, message = _refused("x" * 60, spec_dict)
    assert reason == "InvalidName" and "52" in message


def _eval_spec(spec_dict, tmp_path, **models):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(f'{{"question": "q{i}", "answer": "a{i}"}}\n' for i in range(5)))
    return {"models": [{"name": name, **ref} for name, ref in models.items()],
            "dataset": {"path": str(data), "promptTemplate": "Q: {{ question }}", "referenceFields": ["answer"]},
            "metrics": ["exact_match"], "output": {"path": "runs/eval-out"}}


def _ftj(phase, method="lora", message="", reported="/elsewhere/someone-elses-model"):
    # What its pod reported (artifacts.modelPath) is not where the operator looks: the layout under
    # spec.output.path is.
    return {"spec": {"method": method, "model": {"path": "/models/base"}, "output": {"path": "/out"}},
            "status": {"phase": phase, "message": message, "artifacts": {"modelPath": reported}}}


def test_evaljob_resolves_a_finetunejob_into_base_plus_adapter(spec_dict, tmp_path):
    base = spec_dict["model"]["path"]
    spec = _eval_spec(spec_dict, tmp_path, base={"path": base}, tuned={"fineTuneJob": "ft"})
    _, config = preflight.validate_eval("ev", spec, lookup={"ft": _ftj("Succeeded")}.get)
    assert [(m.name, m.path, m.adapter) for m in config.models] == [("base", base, None), ("tuned", "/models/base", "/out/adapter")]
    _, config = preflight.validate_eval("ev", spec, lookup={"ft": _ftj("Succeeded", method="full")}.get)
    assert (config.models[1].path, config.models[1].adapter) == ("/out/model", None)


def test_evaljob_compares_with_the_training_files_of_each_finetunejob_spec(spec_dict, tmp_path):
    spec = _eval_spec(spec_dict, tmp_path, base={"fineTuneJob": "one"}, tuned={"fineTuneJob": "mix"})
    spec["contamination"] = {"trainingFiles": [{"path": "/data/extra.jsonl"}, {"path": "/data/a.jsonl"}]}
    one = {**_ftj("Succeeded"), "spec": {**_ftj("Succeeded")["spec"], "dataset": {"path": "/data/a.jsonl"}}}
    mix = {**_ftj("Succeeded"), "spec": {**_ftj("Succeeded")["spec"], "dataset": {"tasks": [
        {"name": "qa", "path": "/data/qa.csv", "format": "csv"}, {"name": "sum", "path": "hf://org/sums/train.jsonl"}]}}}
    _, config = preflight.validate_eval("ev", spec, lookup={"one": one, "mix": mix}.get)
    assert [(f.path, f.format.value) for f in config.contamination.training_files] == [
        ("/data/extra.jsonl", "auto"), ("/data/a.jsonl", "auto"), ("/data/qa.csv", "csv"), ("hf://org/sums/train.jsonl", "auto")]
    mix["spec"]["dataset"]["tasks"] = [{"name": f"t{i}", "path": f"/data/{i}.jsonl"} for i in range(63)]
    with pytest.raises(preflight.Invalid, match="spec.contamination.trainingFiles: .* there are 65, more than 64"):
        preflight.validate_eval("ev", spec, lookup={"one": one, "mix": mix}.get)


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
