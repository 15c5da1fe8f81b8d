"""The CRD files are generated from the API models and must not go stale."""
from pathlib import Path

import pytest
import yaml

from kubetune_api import crdgen
from kubetune_api.catalog import Method
from crd_schema import walk

ROOT = Path(__file__).resolve().parents[2]


def test_generated_crds_are_up_to_date():
    """The chart holds the generated CRDs (manifests/crds/ is rendered from the chart; the
    staleness of manifests/ is tests/chart's)."""
    for name, text in crdgen.rendered().items():
        committed = ROOT / "charts" / "kubetune" / "files" / "crds" / name
        assert committed.exists(), f"{committed} missing: run `make crds`"
        assert committed.read_text() == text, f"{committed} is stale: run `make crds`"
    assert {p.name for p in (ROOT / "charts" / "kubetune" / "files" / "crds").iterdir()} == set(crdgen.rendered())




@pytest.mark.parametrize("crd", [crdgen.finetunejob_crd(), crdgen.evaljob_crd()], ids=["FineTuneJob", "EvalJob"])
def test_schema_is_structural_and_documented(crd):
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(root["properties"]["spec"], "spec"):
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node, f"{path} has no type (a structural schema needs one)"
        if not path.endswith("[]"):  # list items are described by their list
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_schema_carries_enums_bounds_and_required_fields():
    spec = crdgen.finetunejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"model", "dataset", "output"}
    assert props["method"]["enum"] == [m.value for m in Method] and {"full", "lora"} <= set(props["method"]["enum"])
    assert props["lora"]["properties"]["r"]["minimum"] == 1
    ratio = props["dataset"]["properties"]["validationRatio"]
    assert ratio["maximum"] == 1.0 and ratio["exclusiveMaximum"] is True
    assert props["training"]["properties"]["learningRate"]["exclusiveMinimum"] is True
    assert props["nodeSelector"]["additionalProperties"]["type"] == "string"


@pytest.mark.parametrize("name, short, columns", [
    ("finetunejobs.kubetune.io.yaml", "ftj", ["Phase", "Method", "Progress", "Loss", "Age"]),
    ("evaljobs.kubetune.io.yaml", "evj", ["Phase", "Task", "Progress", "Age"]),
])
def test_crd_names_status_and_columns(name, short, columns):
    crd = yaml.safe_load(crdgen.rendered()[name])
    assert crd["spec"]["names"]["shortNames"] == [short]
    assert crd["spec"]["names"]["categories"] == ["kubetune"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")] == columns
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_evaljob_schema_requires_models_and_names_metrics():
    spec = crdgen.evaljob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert {"models", "output"} <= set(spec["required"])
    assert "dataset" not in spec["required"]  # or tasks, a suite: the operator's preflight says which is missing
    suite_task = spec["properties"]["tasks"]["items"]
    assert {"name", "dataset"} <= set(suite_task["required"]) and spec["properties"]["tasks"]["maxItems"] == 32
    assert spec["properties"]["dataset"]["properties"]["fewShot"]["properties"]["k"]["maximum"] == 32
    assert spec["properties"]["models"]["minItems"] == 1
    model = spec["properties"]["models"]["items"]
    assert set(model["properties"]) == {"name", "path", "adapter", "fineTuneJob", "dtype"}
    assert spec["properties"]["task"]["enum"] == ["generation", "multiple-choice", "perplexity", "lm-eval"]


# JSONSchemaProps fields a Kubernetes 1.20 API server knows (kubectl validates against them).
_SCHEMA_FIELDS = {"type", "format", "description", "default", "enum", "properties", "items", "additionalProperties", "required",
                  "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
                  "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "nullable", "title", "multipleOf",
                  "allOf", "anyOf", "oneOf", "not", "example", "externalDocs"}


@pytest.mark.parametrize("name", sorted(crdgen.rendered()))
def test_every_schema_key_is_one_the_api_server_knows(name):
    stack, unknown = [yaml.safe_load(crdgen.rendered()[name])["spec"]["versions"][0]["schema"]["openAPIV3Schema"]], set()
    while stack:
        node = stack.pop()
        unknown |= {key for key in node if key not in _SCHEMA_FIELDS and not key.startswith("x-kubernetes-")}
        stack += list((node.get("properties") or {}).values())
        stack += [node[key] for key in ("items", "additionalProperties") if isinstance(node.get(key), dict)]
    assert unknown == set()
