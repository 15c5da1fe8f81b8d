"""Every number and string a user writes has a bound in the schema (so `kubectl apply` refuses
nonsense before anything runs), resource quantities are positive Kubernetes quantities, names
that reach other objects are valid names, and a block that the chosen method or task would
ignore is refused, naming the field."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from kubernetes.utils import parse_quantity
from pydantic import ValidationError

from kubetune_api import EvalJobSpec, FineTuneJobSpec, crdgen
from kubetune_api.resources import QUANTITY_PATTERN
from kubetune_operator import preflight
from crd_schema import walk

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

FTJ = {
    "model": {"path": "/models/base"},
    "dataset": {"path": "rows.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"},
    "output": {"path": "out"},
}
EVJ = {
    "models": [{"name": "base", "path": "/models/base"}],
    "dataset": {"path": "qa.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
    "output": {"path": "out"},
}


def _with(base: dict, path: str, value) -> dict:
    """`base` with the dotted camelCase `path` set to `value` (intermediate blocks created)."""
    spec = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = spec
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return spec


def _refused(model, spec: dict) -> str:
    with pytest.raises(ValidationError) as error:
        model.model_validate(spec)
    return str(error.value)


# (field, a value past the bound, the largest or smallest value that is still accepted)
FINETUNE_BOUNDS = [
    ("training.maxSteps", 10_000_001, 10_000_000),
    ("training.maxSteps", 0, 1),
    ("training.epochs", 1001, 1000),
    ("training.epochs", 0, 0.01),
    ("training.batchSize", 4097, 4096),
    ("training.batchSize", 0, 1),
    ("training.gradientAccumulationSteps", 1025, 1024),
    ("training.warmupSteps", 10_000_001, 10_000_000),
    ("training.evalEverySteps", -1, 0),
    ("training.checkpointEverySteps", 10_000_001, 10_000_000),
    ("training.logEverySteps", 10_000_001, 10_000_000),
    ("training.seed", 2**32, 2**32 - 1),
    ("training.learningRate", 1.5, 1.0),
    ("dataset.maxLength", 131073, 131072),
    ("dataset.maxLength", 7, 8),
    ("lora.r", 1025, 1024),
    ("activeDeadlineSeconds", 30 * 24 * 3600 + 1, 30 * 24 * 3600),
    ("ttlSecondsAfterFinished", 365 * 24 * 3600 + 1, 365 * 24 * 3600),
    ("backoffLimit", 21, 20),
    ("resources.gpu", 65, 64),
    ("model.path", "m" * 4097, "m" * 4096),
    ("dataset.path", "d" * 4097, "d" * 4096),
    ("dataset.promptTemplate", "{{ q }}" + "x" * 65536, "{{ q }}" + "x" * (65536 - 7)),
    ("dataset.completionField", "c" * 257, "c" * 256),
    ("output.path", "o" * 4097, "o" * 4096),
    ("queueName", "q" * 64, "q" * 63),
    ("priorityClassName", "p" * 254, "p" * 253),
    ("image", "i" * 1025, "i" * 1024),
]


@pytest.mark.parametrize("field, bad, good", FINETUNE_BOUNDS, ids=lambda v: str(v)[:24])
def test_finetunejob_numbers_and_strings_are_bounded(field, bad, good):
    message = _refused(FineTuneJobSpec, _with(FTJ, field, bad))
    assert field.split(".")[-1] in message, message
    FineTuneJobSpec.model_validate(_with(FTJ, field, good))


@pytest.mark.parametrize("field, bad, good", [
    ("selective.lastLayers", 257, 256),
    ("selective.patterns", ["p"] * 257, ["p"] * 256),
])
def test_selective_bounds(field, bad, good):
    spec = {**FTJ, "method": "selective"}
    assert field.split(".")[-1] in _refused(FineTuneJobSpec, _with(spec, field, bad))
    FineTuneJobSpec.model_validate(_with(spec, field, good))


def test_tasks_per_mixture_and_list_entries_are_bounded():
    task = {"path": "t.jsonl", "promptTemplate": "{{ q }}", "completionField": "a"}
    dataset = lambda n: {"tasks": [{**task, "name": f"t{i}"} for i in range(n)]}  # noqa: E731
    assert "tasks" in _refused(FineTuneJobSpec, {**FTJ, "dataset": dataset(257)})
    assert len(FineTuneJobSpec.model_validate({**FTJ, "dataset": dataset(256)}).dataset.tasks) == 256
    assert "targetModules" in _refused(FineTuneJobSpec, _with(FTJ, "lora.targetModules", ["q_proj"] * 257))
    assert "targetModules" in _refused(FineTuneJobSpec, _with(FTJ, "lora.targetModules", ["m" * 257]))


@pytest.mark.parametrize("field, bad, good", [
    ("generation.maxNewTokens", 8193, 8192),
    ("generation.maxInputLength", 131073, 131072),
    ("generation.batchSize", 1025, 1024),
    ("generation.topK", 1_000_001, 1_000_000),
    ("generation.seed", 2**32, 2**32 - 1),
    ("generation.stop", ["\n"] * 65, ["\n"] * 64),
    ("dataset.maxExamples", 100_000_001, 100_000_000),
    ("dataset.promptTemplate", "x" * 65537, "x" * 65536),
    ("dataset.referenceFields", ["a"] * 257, ["a"] * 256),
    ("samples", 51, 50),
    ("metrics", ["rouge"] * 33, ["rouge"] * 32),
])
def test_evaljob_numbers_and_strings_are_bounded(field, bad, good):
    assert field.split(".")[-1] in _refused(EvalJobSpec, _with(EVJ, field, bad))
    EvalJobSpec.model_validate(_with(EVJ, field, good))


def test_models_per_evaljob_are_bounded():
    models = lambda n: [{"name": f"m{i}", "path": "/models/base"} for i in range(n)]  # noqa: E731
    assert "models" in _refused(EvalJobSpec, {**EVJ, "models": models(17)})
    assert len(EvalJobSpec.model_validate({**EVJ, "models": models(16)}).models) == 16


POSITIVE_QUANTITIES = ["1", "4", "500m", "0.5", ".5", "5.", "1.5Gi", "32Gi", "100Mi", "2k", "1e3", "1E", "1e-3", "250u", "100n"]
NOT_QUANTITIES = ["-1", "+1", "0", "0.0", "0Gi", "000m", ".", "", "abc", "1.2.3", "1Gb", "1 Gi", "Gi", "1e", "1e999", "1ki", "--1"]


@pytest.mark.parametrize("value", POSITIVE_QUANTITIES)
def test_positive_quantities_are_accepted_and_kubernetes_parses_them(value):
    spec = FineTuneJobSpec.model_validate({**FTJ, "resources": {"cpu": value, "memory": value}})
    assert spec.resources.cpu == value
    assert parse_quantity(value) > 0


@pytest.mark.parametrize("value", NOT_QUANTITIES)
def test_negative_zero_and_malformed_quantities_are_refused(value):
    for field in ("cpu", "memory"):
        message = _refused(FineTuneJobSpec, {**FTJ, "resources": {field: value}})
        assert field in message, message


@pytest.mark.parametrize("field, value", [
    ("queueName", "a b/c"), ("queueName", "Team-A"), ("queueName", "q" * 10_000), ("queueName", "-team"),
    ("priorityClassName", "high priority"), ("priorityClassName", "High"), ("priorityClassName", "p" * 10_000),
])
def test_queue_and_priority_class_must_be_valid_names(field, value):
    assert field in _refused(FineTuneJobSpec, {**FTJ, field: value})


@pytest.mark.parametrize("field, value", [("queueName", "team-a"), ("queueName", "gpu.team-a"), ("priorityClassName", "system.high-1")])
def test_valid_queue_and_priority_class_names(field, value):
    assert FineTuneJobSpec.model_validate({**FTJ, field: value}).model_dump(by_alias=True)[field] == value


@pytest.mark.parametrize("placement, words", [
    ({"nodeSelector": {"gpu": "a100 80gb"}}, "nodeSelector"),
    ({"nodeSelector": {f"k{i}": "v" for i in range(65)}}, "nodeSelector"),
    ({"tolerations": [{"key": "a b", "operator": "Exists"}]}, "key"),
    ({"tolerations": [{"key": "gpu", "value": "x" * 64}]}, "value"),
    ({"volumes": [{"name": "data", "claimName": "a", "mountPath": "/a"}, {"name": "data", "claimName": "b", "mountPath": "/b"}]},
     "volumes: names must be unique"),
    ({"volumes": [{"name": "config", "claimName": "a", "mountPath": "/a"}]}, "not one of the operator's"),
    ({"volumes": [{"name": "kubetune-tmp", "claimName": "a", "mountPath": "/a"}]}, "reserved: kubetune-tmp"),
    ({"volumes": [{"name": "a", "claimName": "a", "mountPath": "/d"}, {"name": "b", "claimName": "b", "mountPath": "/d/"}]},
     "mountPaths must be unique"),
    ({"volumes": [{"name": "a", "claimName": "a", "mountPath": "/etc/kubetune"}]}, "clashing: /etc/kubetune"),
    # ':' would split the pod's list of writable directories: "/data:/" would make "/" writable.
    ({"volumes": [{"name": "a", "claimName": "a", "mountPath": "/data:/"}]}, "mountPath"),
    ({"securityContext": {"runAsUser": 0}}, "runAsUser"),
    ({"securityContext": {"fsGroup": 2**31}}, "fsGroup"),
])
def test_placement_that_would_make_an_invalid_pod_is_refused(placement, words):
    assert words in _refused(FineTuneJobSpec, {**FTJ, **placement})


def test_a_volume_may_replace_a_writable_directory():
    spec = FineTuneJobSpec.model_validate({**FTJ, "volumes": [{"name": "scratch", "claimName": "s", "mountPath": "/workspace"}]})
    assert spec.writable_roots() == ["/workspace"]


# -- blocks the method or task would ignore ------------------------------------------------

@pytest.mark.parametrize("method, block, field", [
    ("full", {"lora": {"r": 16}}, "spec.lora: set but method is full"),
    ("selective", {"lora": {"targetModules": ["o_proj"]}, "selective": {"lastLayers": 1}}, "spec.lora: set but method is selective"),
    ("lora", {"promptTuning": {"numVirtualTokens": 4}}, "spec.promptTuning: set but method is lora"),
    ("full", {"prefixTuning": {}}, "spec.prefixTuning: set but method is full"),
    ("qlora", {"ia3": {}}, "spec.ia3: set but method is qlora"),
    ("lora", {"selective": {"patterns": ["bias"]}}, "spec.selective: set but method is lora"),
])
def test_a_block_for_another_method_is_refused_naming_it(method, block, field):
    with pytest.raises(preflight.Invalid) as error:
        preflight.validate("demo", {**FTJ, "method": method, **block})
    assert error.value.reason == "InvalidSpec" and str(error.value).startswith(field), str(error.value)


def test_lora_defaults_with_another_method_are_not_an_ignored_setting():
    """The API server fills a given block's defaults in, and a full dump of any config holds
    lora: a block equal to the defaults changes nothing, so it passes; unset passes too."""
    full = FineTuneJobSpec.model_validate({**FTJ, "method": "full", "lora": {"r": 8, "alpha": 16}})
    assert "lora" in full.model_fields_set
    assert FineTuneJobSpec.model_validate({**FTJ, "method": "full"}).training_config().method.value == "full"
    dumped = full.training_config().model_dump(by_alias=True, mode="json")
    assert dumped["lora"]["r"] == 8 and type(full.training_config()).model_validate(dumped).method.value == "full"
    assert FineTuneJobSpec.model_validate({**FTJ, "method": "qlora", "lora": {"r": 64}}).lora.r == 64


@pytest.mark.parametrize("task, dataset, field", [
    ("generation", {"textField": "text"}, "dataset.textField: set but task is generation"),
    ("generation", {"choicesField": "c"}, "dataset.choicesField: set but task is generation"),
    ("multiple-choice", {"choicesField": "c", "answerField": "a", "textField": "t", "referenceFields": []},
     "dataset.textField: set but task is multiple-choice"),
    ("perplexity", {"textField": "t", "answerField": "a", "referenceFields": []}, "dataset.answerField: set but task is perplexity"),
    ("perplexity", {"textField": "t"}, "dataset.referenceFields: set but task is perplexity"),
])
def test_dataset_fields_of_another_task_are_refused(task, dataset, field):
    spec = {**EVJ, "task": task, "metrics": [{"generation": "rouge", "multiple-choice": "accuracy"}.get(task, "perplexity")],
            "dataset": {**EVJ["dataset"], **dataset}}
    assert field in _refused(EvalJobSpec, spec)


def test_finetunejob_evaluation_checks_its_task_fields_before_any_evaljob_exists():
    evaluation = {"dataset": {"path": "held.jsonl", "promptTemplate": "{{ q }}"}}
    assert "dataset.referenceFields is required for task generation" in _refused(FineTuneJobSpec, {**FTJ, "evaluation": evaluation})
    evaluation["dataset"]["referenceFields"] = ["a"]
    retention = {"path": "r.jsonl", "promptTemplate": "{{ text }}", "textField": "text", "referenceFields": ["a"]}
    assert "retention.referenceFields: set but task is perplexity" in _refused(
        FineTuneJobSpec, {**FTJ, "evaluation": {**evaluation, "retention": retention}})
    del retention["referenceFields"]
    assert FineTuneJobSpec.model_validate({**FTJ, "evaluation": {**evaluation, "retention": retention}}).evaluation.retention


# -- the CRD says the same ----------------------------------------------------------------

def _spec_schema(crd: dict) -> dict:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_crd_carries_the_bounds_and_says_them_in_the_descriptions():
    spec = _spec_schema(crdgen.finetunejob_crd())["properties"]
    max_steps = spec["training"]["properties"]["maxSteps"]
    assert (max_steps["minimum"], max_steps["maximum"]) == (1, 10_000_000)
    assert max_steps["description"].endswith("Bounds: at least 1, at most 10000000.")
    assert spec["resources"]["properties"]["cpu"]["pattern"] == QUANTITY_PATTERN
    assert spec["queueName"]["maxLength"] == 63 and spec["queueName"]["pattern"].startswith("^[a-z0-9]")
    assert spec["lora"]["properties"]["targetModules"]["items"]["maxLength"] == 256
    assert "each at most 63 characters" in spec["nodeSelector"]["description"]
    models = _spec_schema(crdgen.evaljob_crd())["properties"]["models"]
    assert models["maxItems"] == 16 and "at most 16 entries" in models["description"]




@pytest.mark.parametrize("crd", [crdgen.finetunejob_crd(), crdgen.evaljob_crd()], ids=["FineTuneJob", "EvalJob"])
def test_every_spec_number_string_and_list_has_an_upper_bound(crd):
    unbounded = []
    for path, node in walk(_spec_schema(crd), "spec"):
        kind = node.get("type")
        if "enum" in node:
            continue
        if kind in ("integer", "number") and "maximum" not in node:
            unbounded.append(path)
        if kind == "string" and "maxLength" not in node:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "additionalProperties" in node and "maxProperties" not in node:
            unbounded.append(path)
    # A promotion rule's thresholds are scores on any scale (perplexity, BLEU): no sane bound.
    assert [p for p in unbounded if not p.startswith("spec.promotion.")] == []


# -- real specs still pass -----------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_pass_the_operator_checks(path):
    from kubetune_api.runtimes import ClusterRuntimeSpec, RuntimeSpec

    for manifest in yaml.safe_load_all(path.read_text()):
        if manifest["kind"] == "FineTuneJob":
            spec = preflight.validate(manifest["metadata"]["name"], manifest["spec"])
            assert spec.training_config().method == spec.method
        elif manifest["kind"] in ("ClusterTrainingRuntime", "TrainingRuntime"):
            (ClusterRuntimeSpec if manifest["kind"] == "ClusterTrainingRuntime" else RuntimeSpec).model_validate(manifest["spec"])
        else:
            assert EvalJobSpec.model_validate(manifest["spec"]).models


def _everything(schema: dict, path: str):
    """walk, into map values too."""
    for where, node in walk(schema, path):
        yield where, node
        if isinstance(node.get("additionalProperties"), dict):
            yield from _everything(node["additionalProperties"], f"{where}{{}}")


@pytest.mark.parametrize("crd", [crdgen.finetunejob_crd(), crdgen.evaljob_crd()], ids=["FineTuneJob", "EvalJob"])
def test_every_status_string_list_and_map_has_an_upper_bound(crd):
    """Only the operator writes status, from what pods report among other things: a bounded
    status keeps a forged or runaway report from growing the object, the operator's memory and
    the metrics. Numbers are counts and scores: their size is bounded by their type."""
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    unbounded = [path for path, node in _everything(status, "status")
                 if (node.get("type") == "string" and "maxLength" not in node and "enum" not in node
                     and node.get("format") != "date-time")
                 or (node.get("type") == "array" and "maxItems" not in node)
                 or (node.get("type") == "object" and "additionalProperties" in node and "maxProperties" not in node)]
    assert unbounded == []
