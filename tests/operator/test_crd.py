"""The CRD files are generated from the API models and must not go stale."""
from pathlib import Path

import yaml

from kubetune_operator import crdgen

ROOT = Path(__file__).resolve().parents[2]


def test_generated_crds_are_up_to_date():
    for name, text in crdgen.rendered().items():
        committed = ROOT / "manifests" / "crds" / name
        assert committed.exists(), f"{committed} missing: run `make crds`"
        assert committed.read_text() == text, f"{committed} is stale: run `make crds`"


def _walk(schema, path=""):
    yield path, schema
    for name, prop in (schema.get("properties") or {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_schema_is_structural_and_documented():
    crd = crdgen.finetunejob_crd()
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(root["properties"]["spec"], "spec"):
        assert "$ref" not in node and "anyOf" not in node, path
        assert "type" in node, f"{path} has no type (a structural schema needs one)"
        if not path.endswith("[]"):  # list items are described by their list
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_schema_carries_enums_bounds_and_required_fields():
    spec = crdgen.finetunejob_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    props = spec["properties"]
    assert set(spec["required"]) == {"model", "dataset", "output"}
    assert props["method"]["enum"] == ["full", "lora"]
    assert props["lora"]["properties"]["r"]["minimum"] == 1
    ratio = props["dataset"]["properties"]["validationRatio"]
    assert ratio["maximum"] == 1.0 and ratio["exclusiveMaximum"] is True
    assert props["training"]["properties"]["learningRate"]["exclusiveMinimum"] is True
    assert props["nodeSelector"]["additionalProperties"] == {"type": "string"}


def test_crd_names_status_and_columns():
    crd = yaml.safe_load(next(iter(crdgen.rendered().values())))
    assert crd["spec"]["names"]["shortNames"] == ["ftj"]
    assert crd["spec"]["names"]["categories"] == ["kubetune"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Phase", "Method", "Progress", "Loss", "Age"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
