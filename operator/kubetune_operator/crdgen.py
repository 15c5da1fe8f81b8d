"""Generates the CustomResourceDefinitions from the API models.

`python -m kubetune_operator.crdgen` rewrites manifests/crds/; a test fails when the files
there differ from what this produces, so the models stay the one source of truth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kubetune_operator import api

# Keys of pydantic's JSON Schema that a Kubernetes structural schema does not take.
_DROP_KEYS = {"title", "additionalProperties", "$defs"}


def _openapi(node: Any, defs: dict[str, Any], defaults: bool = True) -> Any:
    """Turns pydantic's JSON Schema into an OpenAPI v3 structural schema (no $ref, no null).

    With defaults, the API server fills in unset spec fields, so `kubectl get -o yaml` shows
    the values the trainer will use.
    """
    if isinstance(node, list):
        return [_openapi(item, defs, defaults) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _openapi(merged, defs, defaults)
    if "anyOf" in node:
        # Optional[X] is anyOf[X, null]: the field may simply be omitted.
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf with {len(options)} non-null options: {node}")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        return _openapi({**options[0], **rest}, defs, defaults)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and (not defaults or value is None):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum"):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: _openapi(prop, defs, defaults) for name, prop in value.items()}
            continue
        out[key] = _openapi(value, defs, defaults)
    # Typed maps (dict[str, str]) keep their value schema.
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _openapi(node["additionalProperties"], defs, defaults)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def schema_of(model: type[BaseModel], defaults: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _openapi(raw, raw.get("$defs", {}), defaults)


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {"name": "Progress", "type": "number", "format": "float", "jsonPath": ".status.progress.percent",
         "description": "Percent of optimizer steps done"},
        {"name": "Loss", "type": "number", "format": "float", "jsonPath": ".status.metrics.trainLoss",
         "description": "Latest training loss"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.model.path", "priority": 1},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
    ]


def finetunejob_crd() -> dict[str, Any]:
    spec_schema = schema_of(api.FineTuneJobSpec)
    status_schema = schema_of(api.FineTuneJobStatus, defaults=False)  # controllers write status
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{api.FINETUNEJOB_PLURAL}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": "FineTuneJob",
                "listKind": "FineTuneJobList",
                "plural": api.FINETUNEJOB_PLURAL,
                "singular": "finetunejob",
                "shortNames": ["ftj"],
                "categories": ["kubetune"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": _printer_columns(),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": api.FineTuneJob.__doc__.strip(),
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string", "description": "API version of this object: kubetune.io/v1alpha1."},
                        "kind": {"type": "string", "description": "FineTuneJob."},
                        "metadata": {"type": "object"},
                        "spec": spec_schema,
                        "status": status_schema,
                    },
                }},
            }],
        },
    }


HEADER = "# Generated by `python -m kubetune_operator.crdgen` from kubetune_operator.api. Do not edit.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text of every generated CRD."""
    crd = finetunejob_crd()
    return {f"{crd['metadata']['name']}.yaml": HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="manifests/crds", help="directory to write the CRDs to")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
