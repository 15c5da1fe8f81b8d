"""Run by tests/operator/test_serving.py with .venv-services/bin/python (KServe's own Python
models, PyPI kserve, a resolution of its own: never imported by the test venv).

    kserve_roundtrip.py IN.json OUT.json

IN holds a list of InferenceService objects as the operator builds them. Each is read into
kserve's V1beta1InferenceService (the kubernetes types inside it, such as V1ObjectMeta and
V1ResourceRequirements, into the kubernetes client's models) and written back: OUT gets the
list of what came back. A field KServe's models do not know is dropped on the way, so the
test's equality check fails on a misspelled or misplaced field.
"""
from __future__ import annotations

import json
import re
import sys
from typing import Any

import kserve
import kserve.models
from kubernetes.client import ApiClient as KubeClient


def build(data: Any, klass: str) -> Any:
    """data read into `klass` (an openapi type string): kserve's models, the kubernetes client's
    for the kubernetes types inside (its own deserializer), unknown keys left out."""
    if data is None:
        return None
    inner = re.fullmatch(r"(?:list\[|List\[)(.*)\]", klass)
    if inner:
        assert isinstance(data, list), (klass, data)
        return [build(item, inner.group(1)) for item in data]
    mapping = re.fullmatch(r"(?:dict\(str, (.*)\)|Dict\[str, (.*)\])", klass)
    if mapping:
        assert isinstance(data, dict), (klass, data)
        return {key: build(value, mapping.group(1) or mapping.group(2)) for key, value in data.items()}
    if klass in ("str", "int", "bool", "float", "object"):
        assert klass == "object" or type(data).__name__ == klass, (klass, data)
        return data
    model = getattr(kserve.models, klass, None)
    if model is None:  # a kubernetes type
        return KubeClient()._ApiClient__deserialize(data, klass)
    assert isinstance(data, dict), (klass, data)
    keys = {json_key: attr for attr, json_key in model.attribute_map.items()}
    return model(**{keys[key]: build(value, model.openapi_types[keys[key]]) for key, value in data.items() if key in keys})


def dump(obj: Any) -> Any:
    if isinstance(obj, list):
        return [dump(item) for item in obj]
    if isinstance(obj, dict):
        return {key: dump(value) for key, value in obj.items()}
    if type(obj).__module__.startswith("kserve."):
        return {obj.attribute_map[attr]: dump(getattr(obj, attr)) for attr in obj.openapi_types if getattr(obj, attr) is not None}
    if type(obj).__module__.startswith("kubernetes."):
        return KubeClient().sanitize_for_serialization(obj)
    return obj


def main() -> None:
    objects = json.loads(open(sys.argv[1]).read())
    back = []
    for obj in objects:
        isvc = build(obj, "V1beta1InferenceService")
        assert isinstance(isvc, kserve.models.V1beta1InferenceService)
        back.append(dump(isvc))
    with open(sys.argv[2], "w") as out:
        json.dump(back, out)


if __name__ == "__main__":
    main()
