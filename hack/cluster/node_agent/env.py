"""Container environment: downward API values (fieldRef, resourceFieldRef), the env a pod
spec declares (envFrom, env with configMap/secret keys) and $(VAR) expansion.

Pure: configMaps and secrets arrive through a `fetch(plural, name)` callable, so all of
this works (and is tested) without a cluster."""
from __future__ import annotations

import base64
import functools
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from kubernetes.utils.quantity import parse_quantity

from .common import HOST_IP, NODE_RESOURCES, NotReady, Unsupported

# fetch(plural, name) -> the namespaced object ("configmaps"/"secrets"), or None if absent.
Fetch = Callable[[str, str], "dict | None"]
# lookup(plural, ref) -> the object's keys as text; raises NotReady unless ref is optional.
Lookup = Callable[[str, dict], "dict[str, str]"]

ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
LABEL_REF = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")


def expand(text: str, env: dict) -> str:
    """Kubernetes $(VAR) expansion: $(VAR) -> value if defined, $$ -> $, else verbatim."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            if text[i + 1] == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    out.append(env[name] if name in env else text[i:end + 1])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


def service_account(pod: dict) -> str:
    spec = pod["spec"]
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


@dataclass
class PodFacts:
    """What the downward API can tell a pod about itself (env vars and downwardAPI files)."""
    pod: dict
    node: str
    ip: str | None = None

    def field(self, path: str) -> str:
        md = self.pod["metadata"]
        m = LABEL_REF.fullmatch(path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        if path in ("metadata.labels", "metadata.annotations"):
            items = sorted((md.get(path.split(".")[1]) or {}).items())
            return "\n".join(f"{k}={json.dumps(v)}" for k, v in items)
        ip = self.ip or ""
        values = {"metadata.name": md["name"], "metadata.namespace": md["namespace"],
                  "metadata.uid": md["uid"], "spec.nodeName": self.node,
                  "spec.serviceAccountName": service_account(self.pod),
                  "status.podIP": ip, "status.podIPs": ip, "status.hostIP": HOST_IP,
                  "status.hostIPs": HOST_IP}
        if path not in values:
            raise Unsupported(f"fieldRef {path!r} is not supported")
        return values[path]

    def resource(self, ref: dict, container: dict | None) -> str:
        """resourceFieldRef: limits default to the node's allocatable, requests to 0."""
        cname = ref.get("containerName")
        if cname:
            spec = self.pod["spec"]
            container = next(c for c in (spec.get("initContainers") or []) + spec["containers"]
                             if c["name"] == cname)
        kind, _, res = ref["resource"].partition(".")
        value = ((container or {}).get("resources") or {}).get(kind, {}).get(res)
        if value is None and kind == "limits":
            value = NODE_RESOURCES.get(res, "0")
        divisor = parse_quantity(ref.get("divisor", "1"))
        q = parse_quantity(value or "0") / divisor
        # Ceiling, as the kubelet rounds up. (Not -(-q // 1): Decimal's // truncates
        # toward zero, which rounded 1.5 down to 1 in the single-file agent.)
        return str(math.ceil(q))


def keys_lookup(fetch: Fetch) -> Lookup:
    """envFrom/valueFrom access to configMap and secret keys (secrets decoded to text)."""
    def keys_of(plural: str, ref: dict) -> dict[str, str]:
        obj = fetch(plural, ref["name"])
        if obj is None:
            if ref.get("optional"):
                return {}
            raise NotReady("CreateContainerConfigError",
                           f'{plural[:-1]} "{ref["name"]}" not found')
        data = obj.get("data") or {}
        if plural == "secrets":
            return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in data.items()}
        return dict(data)
    return keys_of


def declared_env(spec: dict, facts: PodFacts, lookup: Lookup) -> dict[str, str]:
    """The env the container spec declares: envFrom, then env in order, with $(VAR)."""
    declared: dict[str, str] = {}
    for ef in spec.get("envFrom") or []:
        prefix = ef.get("prefix", "")
        if "configMapRef" in ef:
            data = lookup("configmaps", ef["configMapRef"])
        else:
            data = lookup("secrets", ef["secretRef"])
        for k, v in data.items():
            if ENV_NAME.fullmatch(prefix + k):
                declared[prefix + k] = v
    for e in spec.get("env") or []:
        if "valueFrom" not in e:
            declared[e["name"]] = expand(e.get("value", ""), declared)
            continue
        value = value_from(e["valueFrom"], spec, facts, lookup)
        if value is not None:
            declared[e["name"]] = value
    return declared


def value_from(vf: dict, spec: dict, facts: PodFacts, lookup: Lookup) -> str | None:
    """One env valueFrom; None for a missing key of an optional configMap/secret ref."""
    if "fieldRef" in vf:
        return facts.field(vf["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in vf:
        return facts.resource(vf["resourceFieldRef"], spec)
    plural, ref = (("configmaps", vf["configMapKeyRef"]) if "configMapKeyRef" in vf
                   else ("secrets", vf["secretKeyRef"]))
    data = lookup(plural, ref)
    if ref["key"] in data:
        return data[ref["key"]]
    if ref.get("optional"):
        return None
    ns = facts.pod["metadata"]["namespace"]
    raise NotReady("CreateContainerConfigError",
                   f"couldn't find key {ref['key']} in {plural[:-1]} {ns}/{ref['name']}")


# Images whose stand-in is another venv of the repository than the agent's own: the operator
# image holds the operator's extra alone (.venv-operator), like the Helm chart's Deployment.
# Keyed by how the image repository ends; the tag or digest does not matter.
IMAGE_VENVS = {"/operator": ".venv-operator"}
REPO = Path(__file__).resolve().parents[3]


def image_bindir(image: str) -> str:
    """The bin/ that stands in for the image's PATH: its venv's, else the agent's."""
    repository = image.split("@")[0]
    if repository.rfind(":") > repository.rfind("/"):
        repository = repository[:repository.rfind(":")]
    for suffix, venv in IMAGE_VENVS.items():
        if repository.endswith(suffix) and (REPO / venv / "bin").is_dir():
            return str(REPO / venv / "bin")
    return str(Path(sys.executable).parent)


@functools.lru_cache(maxsize=None)
def image_id(image: str) -> str:
    """What stands for the image's digest: local://<venv>@<kubetune version> of its stand-in venv."""
    try:
        version = metadata.version("kubetune")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"local://{Path(image_bindir(image)).parent}@{version}"


def base_env(pod_name: str, image: str = "") -> dict[str, str]:
    """The agent's environment (standing in for the image's), minus cluster access and what the
    trainer image does not set either: HF_HUB_OFFLINE (make's, for the host's own processes; a
    pod decides per hf:// source, offline once its sources are local)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KUBECONFIG", "HF_HUB_OFFLINE") and not k.startswith("KUBERNETES_")}
    bindir = image_bindir(image)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOSTNAME"] = pod_name
    return env
