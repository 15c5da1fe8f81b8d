"""The serving hand-off of a promotion: `spec.promotion.serve` (a KServe InferenceService for the
promoted model), `status.serving`, and where KServe's storage initializer finds the model,
decided from the spec alone (the API models refuse at apply what KServe could never read).

    an object-store destination (s3://, gs://)        storageUri as is
    a destination on one of the job's PVC volumes     pvc://<claimName>/<path inside the claim>
    anything else (the pod's emptyDir working         refused: promotion.serve needs a destination
    directory, az://, a path on no volume)            KServe can read
Light to import: pydantic only.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Optional, Sequence

from pydantic import Field

from kubetune_api.base import MAX_QUANTITY, QUANTITY_PATTERN, ApiModel, ObjectName
from kubetune_api.catalog import produces_full_model
from kubetune_api.layout import ADAPTER_DIR, MODEL_DIR
from kubetune_api.paths import is_under
from kubetune_api.sources import HF_SCHEME, parse_hub_model, uri_scheme
from kubetune_api.wire import WORKSPACE

# KServe's InferenceService, as the operator finds it by API discovery.
KSERVE_GROUP, KSERVE_VERSION, KSERVE_PLURAL, KSERVE_KIND = "serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"
KSERVE_API = f"{KSERVE_GROUP}/{KSERVE_VERSION} {KSERVE_KIND}"
# InferenceService names become Service and host names: a DNS-1035 label.
SERVE_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
MAX_SERVE_NAME = 63
MAX_URL = 2048
# Where the predictor's storage initializer puts the base model and the adapter (storageUris).
BASE_MOUNT, ADAPTER_MOUNT = "/mnt/models/base", "/mnt/models/adapter"
# Object stores KServe's storage initializer reads by these schemes (Azure it names by https URL).
KSERVE_OBJECT_STORES = ("s3", "gs")


class ServeRuntime(str, Enum):
    huggingface = "huggingface"
    vllm = "vllm"


class ServeResources(ApiModel):
    gpu: Optional[int] = Field(None, ge=0, le=64, description="GPUs (nvidia.com/gpu limit) of the predictor; unset: none asked for.")
    cpu: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY, description="CPU request and limit of the predictor (e.g. \"4\").")
    memory: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY, description="Memory request and limit of the predictor (e.g. \"24Gi\").")


class ServeSpec(ApiModel):
    """A KServe InferenceService (serving.kserve.io/v1beta1) for the promoted model, created once it is promoted."""

    runtime: ServeRuntime = Field(
        ServeRuntime.huggingface,
        description="KServe's Hugging Face serving runtime with --backend=huggingface (a full or merged model) or --backend=vllm "
                    "(a full model, or an unmerged LoRA adapter served as a vLLM LoRA module on its base model).")
    name: Optional[str] = Field(None, pattern=SERVE_NAME_PATTERN, max_length=MAX_SERVE_NAME,
                                description="The InferenceService's name (a DNS-1035 label); unset: the FineTuneJob's name.")
    keep: bool = Field(False, description="false: the InferenceService is owned by the FineTuneJob and deleted with it; true: it is left behind (a later job with the same serve.name updates it).")
    resources: ServeResources = Field(default_factory=ServeResources, description="Compute of the predictor.")


class ServingStatus(ApiModel):
    name: Optional[ObjectName] = Field(None, description="The InferenceService.")
    url: Optional[str] = Field(None, max_length=MAX_URL, description="Its URL as KServe reports it (http or https only).")
    ready: bool = Field(False, description="Whether KServe reports it Ready.")


@dataclass(frozen=True)
class ServedModel:
    """What the InferenceService serves: the promoted model's storage URI, and for an unmerged
    LoRA adapter the base model's too."""

    uri: str
    base_uri: Optional[str] = None  # set: uri is a LoRA adapter on this base

    @property
    def adapter(self) -> bool:
        return self.base_uri is not None


def _on_a_claim(path: str, volumes: Sequence[Any], field: str) -> str:
    """pvc://<claim>/<subpath> of an absolute path on one of the volumes (the deepest mount)."""
    mounts = sorted((v for v in volumes if is_under(path, v.mount_path)), key=lambda v: len(posixpath.normpath(v.mount_path)))
    if not mounts:
        roots = ", ".join(v.mount_path for v in volumes) or "none"
        raise ValueError(f"{field}: {path!r} is on none of the job's volumes ({roots}), so KServe cannot read it: use a path "
                         "under a volume's mountPath (served as pvc://<claimName>/...) or an s3:// or gs:// URI")
    volume = mounts[-1]
    inside = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(volume.mount_path))
    return f"pvc://{volume.claim_name}" + ("" if inside == "." else f"/{inside}")


def storage_uri(path: str, volumes: Sequence[Any], field: str, hub: bool = False) -> str:
    """The URI KServe's storage initializer reads `path` by (a spec path: object-store URI,
    hf:// when `hub`, or a path relative to the working directory or absolute)."""
    scheme = uri_scheme(path)
    if scheme in KSERVE_OBJECT_STORES:
        return path.rstrip("/")
    if scheme == "hf" and hub:
        ref = parse_hub_model(path, field)
        return f"{HF_SCHEME}{ref.repo_id}" + (f":{ref.revision}" if ref.revision else "")
    if scheme is not None:
        raise ValueError(f"{field}: {path!r}: promotion.serve needs an s3:// or gs:// URI{', hf://' if hub else ''} or a path "
                         f"on one of the job's volumes (KServe's storage initializer does not read {scheme}://)")
    absolute = path if path.startswith("/") else posixpath.join(WORKSPACE, path)
    if not path.startswith("/") and not any(is_under(absolute, v.mount_path) for v in volumes):
        raise ValueError(f"{field}: {path!r} is relative to the pod's working directory, an emptyDir that goes with the pod, "
                         "so KServe cannot read it: promotion.serve needs a path on one of the job's volumes or an s3:// or gs:// URI")
    return _on_a_claim(absolute, volumes, field)


def served_model(spec: Any) -> ServedModel:
    """Where the promoted model of a FineTuneJob spec (with promotion.serve) lies for KServe;
    ValueError naming promotion.serve and the field when KServe could not serve it."""
    promotion, serve = spec.promotion, spec.promotion.serve
    full = promotion.merge_adapter or produces_full_model(spec.method, spec.lora.merge_on_save)
    uri = storage_uri(promotion.destination, spec.volumes, "promotion.destination").rstrip("/")
    if full:
        return ServedModel(uri=f"{uri}/{MODEL_DIR}")
    method = getattr(spec.method, "value", spec.method)
    if method not in ("lora", "qlora"):
        raise ValueError(f"promotion.serve: method {method} promotes a {method} adapter, which KServe's runtimes cannot serve: "
                         "use method lora, qlora (runtime vllm, or mergeAdapter), full or selective")
    if serve.runtime is ServeRuntime.huggingface:
        raise ValueError("promotion.serve: runtime huggingface serves a full model, and this promotion is an unmerged LoRA adapter: "
                         "set promotion.mergeAdapter, or runtime vllm (the adapter as a LoRA module on its base model)")
    if spec.model.path.endswith(".gguf") or uri_scheme(spec.model.path) == "pkg":
        raise ValueError(f"promotion.serve: vLLM applies the LoRA adapter to a Hugging Face checkpoint, and model.path "
                         f"{spec.model.path!r} is not one: set promotion.mergeAdapter")
    base = storage_uri(spec.model.path, spec.volumes, "promotion.serve (the base model, model.path)", hub=True)
    return ServedModel(uri=f"{uri}/{ADAPTER_DIR}", base_uri=base)


def serve_name(job_name: str, serve: ServeSpec) -> str:
    """The InferenceService's name: serve.name, else the FineTuneJob's (which must then be a
    DNS-1035 label: KServe's names become Service and host names)."""
    if serve.name is not None:
        return serve.name
    if not re.match(SERVE_NAME_PATTERN, job_name):
        raise ValueError(f"promotion.serve.name: unset, so the InferenceService would be named like the FineTuneJob, and "
                         f"{job_name!r} is not a DNS-1035 label (lower-case letters, digits and '-', starting with a letter): set serve.name")
    return job_name
