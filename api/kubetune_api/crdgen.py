"""Generates the CustomResourceDefinitions (FineTuneJob, EvalJob, ClusterTrainingRuntime,
TrainingRuntime) from the API models.

`python -m kubetune_api.crdgen` rewrites charts/kubetune/files/crds/ (the Helm chart, from
which `make manifests` renders manifests/); a test fails when the files
there differ from what this produces, so the models stay the one source of truth.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

import kubetune_api as api
from kubetune_api import runtimes, wire

# Keys of pydantic's JSON Schema that a Kubernetes structural schema does not take
# (propertyNames: a map key's bound; the models still hold the operator to it).
_DROP_KEYS = {"title", "additionalProperties", "$defs", "propertyNames"}


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) or not float(value).is_integer() else str(int(value))


def bounds_note(node: dict[str, Any]) -> str:
    """A JSON Schema node's bounds in words ("Bounds: at least 1, at most 64."), or "": every
    bound the API server enforces is also said in the field's description (kubectl explain,
    the reference pages under docs/reference/)."""
    parts = []
    for key, words in (("minimum", "at least"), ("exclusiveMinimum", "more than"),
                       ("maximum", "at most"), ("exclusiveMaximum", "less than")):
        if isinstance(node.get(key), (int, float)) and not isinstance(node.get(key), bool):
            parts.append(f"{words} {_number(node[key])}")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    for key, words in (("minItems", "at least"), ("maxItems", "at most"), ("maxProperties", "at most")):
        if node.get(key):
            parts.append(f"{words} {node[key]} {'entry' if node[key] == 1 else 'entries'}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict) and "maxLength" in node[key]:
            parts.append(f"each at most {node[key]['maxLength']} characters")
    return f"Bounds: {', '.join(parts)}." if parts else ""


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
    if out.get("description") and bounds_note(node):
        out["description"] = f"{out['description']} {bounds_note(node)}"
    return out


def schema_of(model: type[BaseModel], defaults: bool = True) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _openapi(raw, raw.get("$defs", {}), defaults)


def _column(name: str, path: str, type_: str = "string", priority: int = 0, description: str = "") -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if type_ == "number":
        column["format"] = "float"
    if description:
        column["description"] = description
    if priority:
        column["priority"] = priority
    return column


FINETUNEJOB_COLUMNS = [
    _column("Phase", ".status.phase"),
    _column("Method", ".spec.method"),
    _column("Progress", ".status.progress.percent", "number", description="Percent of optimizer steps done"),
    _column("Loss", ".status.metrics.trainLoss", "number", description="Latest training loss"),
    _column("Age", ".metadata.creationTimestamp", "date"),
    _column("Model", ".spec.model.path", priority=1),
    _column("Job", ".status.jobName", priority=1),
    _column("Message", ".status.message", priority=1),
]

EVALJOB_COLUMNS = [
    _column("Phase", ".status.phase"),
    _column("Task", ".spec.task"),
    _column("Progress", ".status.progress.percent", "number", description="Percent of examples done over all models"),
    _column("Age", ".metadata.creationTimestamp", "date"),
    _column("Dataset", ".spec.dataset.path", priority=1),
    _column("Job", ".status.jobName", priority=1),
    _column("Message", ".status.message", priority=1),
]


RUNTIME_COLUMNS = [
    _column("Image", ".spec.image"),
    _column("GPU", ".spec.resources.defaults.gpu", "integer", description="GPUs per pod by default"),
    _column("Max GPU", ".spec.resources.max.gpu", "integer", description="Most GPUs per pod"),
    _column("Age", ".metadata.creationTimestamp", "date"),
    _column("Service Account", ".spec.serviceAccountName", priority=1),
    _column("Priority Class", ".spec.priorityClassName", priority=1),
]
CLUSTER_RUNTIME_COLUMNS = [*RUNTIME_COLUMNS, _column("Namespaces", ".spec.namespaces", priority=1)]


def _crd(kind: str, plural: str, short_name: str, model: type[BaseModel], spec: type[BaseModel],
         status: type[BaseModel] | None, columns: list[dict[str, Any]], scope: str = "Namespaced") -> dict[str, Any]:
    properties = {
        "apiVersion": {"type": "string", "description": f"API version of this object: {api.API_VERSION}."},
        "kind": {"type": "string", "description": f"{kind}."},
        "metadata": {"type": "object"},
        "spec": schema_of(spec),
    }
    if status is not None:
        properties["status"] = schema_of(status, defaults=False)  # controllers write status
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{api.GROUP}"},
        "spec": {
            "group": api.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": [short_name],
                "categories": ["kubetune"],
            },
            "versions": [{
                "name": api.VERSION,
                "served": True,
                "storage": True,
                **({"subresources": {"status": {}}} if status is not None else {}),
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": model.__doc__.strip(),
                    "required": ["spec"],
                    "properties": properties,
                }},
            }],
        },
    }


def finetunejob_crd() -> dict[str, Any]:
    return _crd("FineTuneJob", api.FINETUNEJOB_PLURAL, "ftj", api.FineTuneJob, api.FineTuneJobSpec,
                api.FineTuneJobStatus, FINETUNEJOB_COLUMNS)


def evaljob_crd() -> dict[str, Any]:
    return _crd("EvalJob", api.EVALJOB_PLURAL, "evj", api.EvalJob, api.EvalJobSpec, api.EvalJobStatus, EVALJOB_COLUMNS)


def cluster_runtime_crd() -> dict[str, Any]:
    return _crd(wire.CLUSTER_RUNTIME_KIND, wire.CLUSTER_RUNTIME_PLURAL, "ctrt", runtimes.ClusterTrainingRuntime,
                runtimes.ClusterRuntimeSpec, None, CLUSTER_RUNTIME_COLUMNS, scope="Cluster")


def runtime_crd() -> dict[str, Any]:
    return _crd(wire.RUNTIME_KIND, wire.RUNTIME_PLURAL, "trt", runtimes.TrainingRuntime, runtimes.RuntimeSpec, None, RUNTIME_COLUMNS)


HEADER = "# Generated by `python -m kubetune_api.crdgen` from kubetune_api. Do not edit.\n"


def rendered() -> dict[str, str]:
    """File name -> YAML text of every generated CRD."""
    return {f"{crd['metadata']['name']}.yaml": HEADER + yaml.safe_dump(crd, sort_keys=False, width=100)
            for crd in (finetunejob_crd(), evaljob_crd(), cluster_runtime_crd(), runtime_crd())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="charts/kubetune/files/crds", help="directory to write the CRDs to")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in rendered().items():
        (out / name).write_text(text)
        print(f"wrote {out / name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
