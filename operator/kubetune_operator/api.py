"""FineTuneJob, kubetune.io/v1alpha1, as typed models: the source the CRD is generated from.

The spec is the trainer's TrainingConfig (what to train) plus placement (where and how the
pod runs), which only the operator reads.
"""
from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Optional

from pydantic import Field

from kubetune_trainer.config import ApiModel, TrainingConfig, TRAINING_FIELDS
from kubetune_trainer.report import Artifacts, Metrics, Progress

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINETUNEJOB_PLURAL = "finetunejobs"
DEFAULT_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"

QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"


class Resources(ApiModel):
    gpu: int = Field(1, ge=0, le=64, description="GPUs (nvidia.com/gpu) for the trainer pod; one accelerate process runs per GPU.")
    cpu: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, description="CPU request and limit, a Kubernetes quantity (e.g. \"4\" or \"500m\").")
    memory: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, description="Memory request and limit, a Kubernetes quantity (e.g. \"32Gi\").")


class TolerationOperator(str, Enum):
    Exists = "Exists"
    Equal = "Equal"


class TaintEffect(str, Enum):
    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


class Toleration(ApiModel):
    key: Optional[str] = Field(None, description="Taint key the toleration applies to; empty with operator Exists matches all keys.")
    operator: TolerationOperator = Field(TolerationOperator.Equal, description="Exists or Equal.")
    value: Optional[str] = Field(None, description="Taint value to match when operator is Equal.")
    effect: Optional[TaintEffect] = Field(None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: Optional[int] = Field(None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears.")


class VolumeMount(ApiModel):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Volume name inside the pod.")
    claim_name: str = Field(min_length=1, description="PersistentVolumeClaim to mount (datasets, models, outputs).")
    mount_path: str = Field(pattern=r"^/", description="Absolute path in the trainer container.")
    read_only: bool = Field(False, description="Mount read-only.")


class ImagePullPolicy(str, Enum):
    Always = "Always"
    IfNotPresent = "IfNotPresent"
    Never = "Never"


class FineTuneJobSpec(TrainingConfig):
    """What to fine-tune (model, dataset, method, training, output) and where the trainer runs."""

    image: str = Field(DEFAULT_IMAGE, min_length=1, description="Trainer container image (must provide the kubetune-train command).")
    image_pull_policy: ImagePullPolicy = Field(ImagePullPolicy.IfNotPresent, description="When the kubelet pulls the image.")
    resources: Resources = Field(default_factory=Resources, description="Compute for the trainer pod.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the trainer pod must match (e.g. a GPU type).")
    tolerations: list[Toleration] = Field(default_factory=list, description="Taints the trainer pod tolerates (e.g. dedicated GPU nodes).")
    volumes: list[VolumeMount] = Field(default_factory=list, description="PersistentVolumeClaims mounted into the trainer pod.")
    queue_name: Optional[str] = Field(None, description="Kueue LocalQueue to admit the Job through (sets the kueue.x-k8s.io/queue-name label).")
    priority_class_name: Optional[str] = Field(None, description="PriorityClass of the trainer pod.")
    backoff_limit: int = Field(0, ge=0, le=20, description="Pod retries before the job fails (raise it on preemptible nodes).")
    active_deadline_seconds: Optional[int] = Field(None, ge=1, description="Wall-clock limit for the whole job; past it the job fails with DeadlineExceeded.")

    def training_config(self) -> TrainingConfig:
        """The part handed to the trainer, as the trainer's own model."""
        return TrainingConfig.model_validate(self.model_dump(include=set(TRAINING_FIELDS)))


class Phase(str, Enum):
    Pending = "Pending"
    Running = "Running"
    Succeeded = "Succeeded"
    Failed = "Failed"


TERMINAL_PHASES = (Phase.Succeeded, Phase.Failed)


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(ApiModel):
    type: str = Field(description="Condition type, e.g. Succeeded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word saying why.")
    message: str = Field("", description="Human-readable detail.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: Optional[int] = Field(None, description="metadata.generation this condition was computed from.")


class FineTuneJobStatus(ApiModel):
    phase: Optional[Phase] = Field(None, description="Pending, Running, Succeeded or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations; Succeeded is Unknown while the job runs, then True or False.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: Optional[int] = Field(None, description="metadata.generation the operator last acted on.")
    start_time: Optional[datetime] = Field(None, description="When the trainer pod started running.")
    completion_time: Optional[datetime] = Field(None, description="When the job reached Succeeded or Failed.")
    job_name: Optional[str] = Field(None, description="The batch/v1 Job running the trainer.")
    message: Optional[str] = Field(None, description="Short summary of the current state.")
    progress: Optional[Progress] = Field(None, description="Training progress, reported by the trainer pod.")
    metrics: Optional[Metrics] = Field(None, description="Loss and accuracy, reported by the trainer pod.")
    artifacts: Optional[Artifacts] = Field(None, description="Where the trainer wrote its results.")


class FineTuneJob(ApiModel):
    """Fine-tunes a causal language model on instruction data inside a Kubernetes Job."""

    spec: FineTuneJobSpec
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus)
