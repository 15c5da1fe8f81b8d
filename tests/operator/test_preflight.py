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
