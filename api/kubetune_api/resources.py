"""FineTuneJob and EvalJob, kubetune.io/v1alpha1, as typed models: the source the CRDs are
generated from.

Each spec is the pod's own config (TrainingConfig, EvalConfig: what to do) plus Placement
(where and how the pod runs), which only the operator reads.
"""
from __future__ import annotations

import posixpath
from datetime import datetime
from enum import Enum
from typing import Annotated, Optional

from pydantic import Field, StringConstraints, model_validator

from kubetune_api.base import (MAX_QUANTITY, QUANTITY_PATTERN, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_MAX, DNS_SUBDOMAIN_PATTERN, MAX_CONDITIONS, MAX_MODELS, MAX_PATH,
                               MAX_RECORDS, MAX_SAMPLES, MAX_SCORES, NAME_PATTERN, MessageText, ObjectName, Scores, ShortText,
                               ApiModel, NameList, Phase)
from kubetune_api.catalog import BuiltinMetric, EvalTask, produces_full_model
from kubetune_api.gang import MultiNode
from kubetune_api.evaluation import (MODEL_PATH_DOC, DEFAULT_METRICS, MAX_SUITE_TASKS, BleuSpec, ContaminationSpec, DeltaIntervalSpec, EvalConfig, EvalDataset, EvalModel, ExactMatchSpec, GenerationSpec, RougeSpec,
                                     check_task_dataset, check_lm_eval_fields)
from kubetune_api.lm_eval import LmEvalSpec, check_task_inputs
from kubetune_api.paths import is_under
from kubetune_api.sharding import fsdp_batch_covers_ranks
from kubetune_api.sources import check_model_uri
from kubetune_api.promotion import PromotionSpec, PromotionStatus, Usage, is_object_store
from kubetune_api.serving import ServingStatus, served_model
from kubetune_api.reports import Artifacts, Contamination, EvalArtifacts, EvalProgress, Lineage, Metrics, ModelResult, Progress, Sample, SuiteTaskResult
from kubetune_api.tracking import TrackingStatus
from kubetune_api.training import TRAINING_FIELDS, Dtype, TrainingConfig
from kubetune_api.wire import DEFAULT_IMAGE, DEFAULT_RUN_AS_USER, RESERVED_MOUNT_PATHS, RESERVED_VOLUMES

# Label values (Kubernetes' validation): also the Kueue queue name, which becomes one.
LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
# Label and taint keys: an optional DNS-subdomain prefix and '/', then a name.
QUALIFIED_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
MAX_UID = 2**31 - 1


class Resources(ApiModel):
    gpu: Optional[int] = Field(None, ge=0, le=64, description="GPUs (nvidia.com/gpu) per pod. A FineTuneJob runs one accelerate process per GPU; an EvalJob runs one process that shards each model across its GPUs (a device map: models larger than one GPU evaluate, docs/evaljob.md). Unset: the runtime's default (at most 1 for an EvalJob), else 1.")
    cpu: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY,
                               description="CPU request and limit, a positive Kubernetes quantity (e.g. \"4\" or \"500m\").")
    memory: Optional[str] = Field(None, pattern=QUANTITY_PATTERN, max_length=MAX_QUANTITY,
                                  description="Memory request and limit, a positive Kubernetes quantity (e.g. \"32Gi\").")
    nodes: int = Field(1, ge=1, le=64, description="Pods the training runs on, each with these resources and one process per GPU (one process when gpu is 0): torch.distributed across pods, rank 0 reports and writes the outputs. FineTuneJob only; EvalJobs run on one pod.")


class TolerationOperator(str, Enum):
    Exists = "Exists"
    Equal = "Equal"


class TaintEffect(str, Enum):
    NoSchedule = "NoSchedule"
    PreferNoSchedule = "PreferNoSchedule"
    NoExecute = "NoExecute"


class Toleration(ApiModel):
    key: Optional[str] = Field(None, pattern=QUALIFIED_NAME_PATTERN, max_length=317, description="Taint key the toleration applies to; empty with operator Exists matches all keys.")
    operator: TolerationOperator = Field(TolerationOperator.Equal, description="Exists or Equal.")
    value: Optional[str] = Field(None, pattern=LABEL_VALUE_PATTERN, max_length=63, description="Taint value to match when operator is Equal.")
    effect: Optional[TaintEffect] = Field(None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: Optional[int] = Field(None, ge=0, le=365 * 24 * 3600, description="For NoExecute: how long the pod stays bound after the taint appears.")


class VolumeMount(ApiModel):
    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Volume name inside the pod.")
    claim_name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX,
                            description="PersistentVolumeClaim in the job's namespace to mount (datasets, models, outputs).")
    mount_path: str = Field(pattern=r"^/[^:]*$", max_length=MAX_PATH, description="Absolute path in the trainer container, without ':' (the pod's list of writable directories is ':'-separated).")
    read_only: bool = Field(False, description="Mount read-only.")


class ImagePullPolicy(str, Enum):
    Always = "Always"
    IfNotPresent = "IfNotPresent"
    Never = "Never"


class PodSecurity(ApiModel):
    """Who the pod's processes run as; the rest of the pod security context is fixed (restricted)."""

    run_as_user: int = Field(DEFAULT_RUN_AS_USER, ge=1, le=MAX_UID, description="User id of the pod's processes (never 0: the pod runs as non-root); kubetune's images use 65532.")
    run_as_group: int = Field(DEFAULT_RUN_AS_USER, ge=1, le=MAX_UID, description="Primary group id of the pod's processes.")
    fs_group: int = Field(DEFAULT_RUN_AS_USER, ge=1, le=MAX_UID, description="Group that owns the pod's volumes, so the processes can write to PersistentVolumeClaims (changed only when the volume's root does not match).")


class RuntimeKind(str, Enum):
    ClusterTrainingRuntime = "ClusterTrainingRuntime"
    TrainingRuntime = "TrainingRuntime"


class RuntimeRef(ApiModel):
    """A ClusterTrainingRuntime or TrainingRuntime (kubetune_api.runtimes): the admin's image,
    placement, credentials and volumes for the job's pods."""

    kind: RuntimeKind = Field(RuntimeKind.ClusterTrainingRuntime, description="ClusterTrainingRuntime (cluster-wide, for the namespaces it allows) or TrainingRuntime (in the job's own namespace).")
    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description="The runtime's name.")


class Placement(ApiModel):
    """Where and how the pod runs; read by the operator only."""

    runtime: Optional[RuntimeRef] = Field(
        None, description="The runtime whose image, placement, credentials, volumes and resource defaults and limits the pods get (docs/runtimes.md); a field the runtime sets may not be set here too. Required when the operator's policy makes runtimes mandatory.")

    image: Optional[str] = Field(
        None, min_length=1, max_length=1024,
        description=f"Container image (must provide the kubetune-train, kubetune-eval and kubetune-promote commands); unset: the operator's trainer image setting (by default {DEFAULT_IMAGE}).")
    image_pull_policy: Optional[ImagePullPolicy] = Field(None, description="When the kubelet pulls the image; unset: the runtime's, else IfNotPresent.")
    resources: Resources = Field(default_factory=Resources, description="Compute for the pod.")
    node_selector: dict[str, Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]] = Field(
        default_factory=dict, max_length=64, description="Node labels the pod must match (e.g. a GPU type).")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=64, description="Taints the pod tolerates (e.g. dedicated GPU nodes).")
    volumes: list[VolumeMount] = Field(
        default_factory=list, max_length=64,
        description=f"PersistentVolumeClaims mounted into the pod; unique names and mount paths (names {', '.join(RESERVED_VOLUMES)} are the operator's).")
    queue_name: Optional[str] = Field(
        None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=63,
        description="Kueue LocalQueue to admit the Job through (sets the kueue.x-k8s.io/queue-name label; on Kubernetes 1.21 and later the Job is created suspended until Kueue admits it).")
    priority_class_name: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description="PriorityClass of the pod.")
    security_context: Optional[PodSecurity] = Field(None, description=f"User and groups the pod runs as (non-root, restricted Pod Security Standard); unset: the runtime's, else {DEFAULT_RUN_AS_USER} for all three.")
    backoff_limit: int = Field(3, ge=0, le=20, description="Retries after infrastructure failures (eviction, preemption, node loss, a kill by signal); each resumes from the latest checkpoint. The user's errors (bad config or data, OOMKilled, deadline) never retry.")
    active_deadline_seconds: Optional[int] = Field(None, ge=1, le=30 * 24 * 3600, description="Wall-clock limit of each attempt; past it the job fails with DeadlineExceeded.")
    suspend: bool = Field(False, description="True stops the job's pods (phase Suspended); false starts it again, resuming from the latest checkpoint. The one field that may change after creation.")
    ttl_seconds_after_finished: Optional[int] = Field(None, ge=0, le=365 * 24 * 3600, description="Delete the job (and its children) this many seconds after it Succeeded or Failed; outputs on volumes stay.")

    @model_validator(mode="after")
    def _volumes_fit_the_pod(self) -> "Placement":
        names = [v.name for v in self.volumes]
        taken = sorted({n for n in names if names.count(n) > 1 or n in RESERVED_VOLUMES})
        if taken:
            raise ValueError(f"volumes: names must be unique and not one of the operator's ({', '.join(RESERVED_VOLUMES)}); repeated or reserved: {', '.join(taken)}")
        paths = [posixpath.normpath(v.mount_path) for v in self.volumes]
        clash = sorted({p for p in paths if paths.count(p) > 1 or p in RESERVED_MOUNT_PATHS})
        if clash:
            raise ValueError(f"volumes: mountPaths must be unique and not {', '.join(RESERVED_MOUNT_PATHS)}; clashing: {', '.join(clash)}")
        return self

    def writable_roots(self) -> list[str]:
        """Mount paths of the volumes the pod may write to."""
        return [v.mount_path for v in self.volumes if not v.read_only]

    def check_output_path(self, path: str, field: str = "output.path") -> None:
        """An absolute output path must lie on a writable volume; relative ones stay in the
        working directory (checked by OutputSpec itself)."""
        if path.startswith("/") and not any(is_under(path, root) for root in self.writable_roots()):
            roots = ", ".join(self.writable_roots()) or "none"
            raise ValueError(f"{field}: {path!r} is outside the job's writable volumes ({roots}); use a relative path "
                             "or a path under a volume's mountPath that is not readOnly")


class FineTuneEvaluation(ApiModel):
    """Evaluation run automatically (as an owned EvalJob) once training succeeds: base vs tuned."""

    dataset: Optional[EvalDataset] = Field(None, description="Rows to evaluate base and tuned model on (every task but lm-eval).")
    task: EvalTask = Field(EvalTask.generation, description="generation, multiple-choice, perplexity or lm-eval (lmEval: lm-evaluation-harness's tasks, scores '<task>/<metric>').")
    lm_eval: Optional[LmEvalSpec] = Field(None, description="task lm-eval: the lm-evaluation-harness tasks base and tuned model run, as an EvalJob's spec.lmEval.")
    # Built-in names only: this EvalJob runs after training, so a name it could only try on the
    # Hub (a typo included) must be refused at apply, not after the training it waits for.
    metrics: list[BuiltinMetric] = Field(
        default_factory=lambda: list(DEFAULT_METRICS), validate_default=True, min_length=1, max_length=32,
        description="Metric names, as in EvalJob spec.metrics but built-in ones only, each for the task (checked at apply, "
                    "not after training). For a metric of the evaluate package, apply an EvalJob whose model is this "
                    "FineTuneJob (fineTuneJob) instead.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Decoding settings for generation.")
    rouge: RougeSpec = Field(default_factory=RougeSpec, description="ROUGE settings.")
    bleu: BleuSpec = Field(default_factory=BleuSpec, description="BLEU settings.")
    exact_match: ExactMatchSpec = Field(default_factory=ExactMatchSpec, description="Normalization for exact match and token F1.")
    delta_interval: DeltaIntervalSpec = Field(default_factory=DeltaIntervalSpec, description="Paired-bootstrap intervals of each delta, tuned minus base (what promotion's minDeltaLowerBound reads).")
    contamination: ContaminationSpec = Field(default_factory=ContaminationSpec, description="Overlap of the evaluation rows with this job's training files (added by the operator), checked before any model loads.")
    retention: Optional[EvalDataset] = Field(
        None, description="Rows of other tasks (perplexity on retention.textField): base vs tuned on them measures forgetting.")
    gpu: Optional[int] = Field(
        None, ge=0, le=64,
        description="GPUs of the evaluation's EvalJobs, which shard each model across them (for a model larger than one GPU; docs/evaljob.md, sharded evaluation). Unset: the FineTuneJob's resources.gpu, at most 1.")

    @model_validator(mode="after")
    def _task_fields(self) -> "FineTuneEvaluation":
        check_task_inputs(self.task, self.dataset is not None, self.lm_eval)
        if self.task == EvalTask.lm_eval:
            check_lm_eval_fields(self)
        else:
            check_task_dataset(self.task, self.dataset)
        if self.retention is not None:
            try:
                check_task_dataset(EvalTask.perplexity, self.retention)
            except ValueError as error:
                raise ValueError(str(error).replace("dataset.", "retention.", 1)) from None
        return self


class FineTuneJobSpec(MultiNode, Placement, TrainingConfig):
    """What to fine-tune (model, dataset, method, training, output) and where the trainer runs."""

    evaluation: Optional[FineTuneEvaluation] = Field(None, description="Evaluate base vs tuned after training (creates an EvalJob).")
    promotion: Optional[PromotionSpec] = Field(None, description="Copy the tuned model to a destination when its evaluation passes these rules (needs evaluation).")
    _fsdp_batch_covers_ranks = model_validator(mode="after")(fsdp_batch_covers_ranks)

    @model_validator(mode="after")
    def _output_on_a_volume(self) -> "FineTuneJobSpec":
        self.check_output_path(self.output.path)
        return self

    @model_validator(mode="after")
    def _promotion_is_gated(self) -> "FineTuneJobSpec":
        promotion = self.promotion
        if promotion is None:
            if self.tracking is not None and self.tracking.mlflow.registered_model:
                raise ValueError("tracking.mlflow.registeredModel: needs a promotion block (the promoted model is registered)")
            return self
        if self.evaluation is None:
            raise ValueError("promotion: needs an evaluation block (its rules are checked on the evaluation's scores)")
        if promotion.max_forgetting and self.evaluation.retention is None:
            raise ValueError("promotion.maxForgetting: needs evaluation.retention (forgetting is measured on it)")
        if promotion.merge_adapter and (self.method.value not in ("lora", "qlora") or self.lora.merge_on_save):
            raise ValueError(f"promotion.mergeAdapter: method {self.method.value} "
                             f"{'already saves a full model' if self.lora.merge_on_save else 'has no LoRA adapter to merge'}")
        if promotion.export is not None and not (promotion.merge_adapter or produces_full_model(self.method, self.lora.merge_on_save)):
            raise ValueError(f"promotion.export: needs a full model, and method {self.method.value} saves an adapter: "
                             "set promotion.mergeAdapter (methods lora and qlora) or use method full")
        if not is_object_store(promotion.destination):
            self.check_output_path(promotion.destination, "promotion.destination")
        if promotion.serve is not None:
            served_model(self)  # KServe must be able to read the promoted model (and its base)
        return self

    def training_config(self) -> TrainingConfig:
        """The part handed to the trainer, as the trainer's own model."""
        return TrainingConfig.model_validate(self.model_dump(include=set(TRAINING_FIELDS)))


class EvalModelRef(ApiModel):
    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="Label of this model in results (e.g. base, tuned).")
    path: Optional[str] = Field(None, min_length=1, max_length=MAX_PATH, description=MODEL_PATH_DOC)
    adapter: Optional[str] = Field(None, min_length=1, max_length=MAX_PATH, description="A PEFT adapter directory applied on top of path.")
    fine_tune_job: Optional[str] = Field(None, pattern=DNS_SUBDOMAIN_PATTERN, max_length=DNS_SUBDOMAIN_MAX, description="A Succeeded FineTuneJob in this namespace: its output (adapter applied to its base model, or its full model). Instead of path.")
    dtype: Dtype = Field(Dtype.auto, description="Weight dtype for inference.")

    @model_validator(mode="after")
    def _one_source(self) -> "EvalModelRef":
        if (self.path is None) == (self.fine_tune_job is None):
            raise ValueError(f"models[{self.name}]: set exactly one of path and fineTuneJob")
        if self.fine_tune_job and self.adapter:
            raise ValueError(f"models[{self.name}]: adapter comes from the FineTuneJob; do not set both")
        if self.path is not None:
            check_model_uri(self.path, f"models[{self.name}].path")
        return self


EVAL_FIELDS = tuple(f for f in EvalConfig.model_fields if f != "models")


class EvalJobSpec(Placement, EvalConfig):
    """Which models to score (side by side), on what data, with which metrics, and where the evaluator runs."""

    models: list[EvalModelRef] = Field(min_length=1, max_length=MAX_MODELS, description="Models scored side by side; deltas are against the first.")

    @model_validator(mode="after")
    def _output_on_a_volume(self) -> "EvalJobSpec":
        self.check_output_path(self.output.path)
        return self

    @model_validator(mode="after")
    def _one_pod(self) -> "EvalJobSpec":
        if self.resources.nodes != 1:
            raise ValueError("resources.nodes: an EvalJob runs on one pod (nodes: 1)")
        return self

    def eval_config(self, models: list[EvalModel]) -> EvalConfig:
        """The evaluator's config, with FineTuneJob references resolved into models."""
        data = self.model_dump(include=set(EVAL_FIELDS))
        return EvalConfig.model_validate({**data, "models": [m.model_dump() for m in models]})


class ConditionStatus(str, Enum):
    true = "True"
    false = "False"
    unknown = "Unknown"


class Condition(ApiModel):
    type: ShortText = Field(description="Condition type, e.g. Succeeded.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: ShortText = Field(description="One CamelCase word saying why.")
    message: MessageText = Field("", description="Human-readable detail.")
    last_transition_time: datetime = Field(description="When status last changed.")
    observed_generation: Optional[int] = Field(None, description="metadata.generation this condition was computed from.")


class FailureClass(str, Enum):
    infrastructure = "infrastructure"  # evicted, preempted, node lost, killed by a signal: retried
    user = "user"  # bad config or data, OOMKilled, deadline, an error in training: not retried


class Failure(ApiModel):
    failure_class: FailureClass = Field(alias="class", description="infrastructure (retried) or user (fails the job).")
    reason: ShortText = Field(description="One CamelCase word, e.g. Evicted, KilledBySignal, OOMKilled, InvalidDataset.")
    message: MessageText = Field("", description="What happened, from the pod.")
    attempt: int = Field(1, ge=1, description="The attempt that failed.")
    exit_code: Optional[int] = Field(None, description="The container's exit code, when it ran.")


class PodRecord(ApiModel):
    name: ObjectName = Field(description="Pod name.")
    attempt: int = Field(1, ge=1, description="The attempt the pod belonged to.")
    gpus: int = Field(0, ge=0, description="GPUs the pod held.")
    started_at: Optional[datetime] = Field(None, description="When its container started.")
    finished_at: Optional[datetime] = Field(None, description="When it ended, or when the operator last saw it running.")
    running: bool = Field(False, description="Whether it was running when last seen.")
    tokens: Optional[int] = Field(None, ge=0, description="Tokens its trainer reported training on in this pod (rank 0 of an attempt): trainTokens less the count it resumed with.")
    lost: bool = Field(False, description="It disappeared while running (deleted, or its node lost) without reporting an end.")


class RuntimeRecord(ApiModel):
    """The runtime an attempt launched with, as the operator read it."""

    kind: RuntimeKind = Field(description="ClusterTrainingRuntime or TrainingRuntime.")
    name: ObjectName = Field(description="Its name.")
    generation: Optional[int] = Field(None, ge=0, description="Its metadata.generation when read.")
    digest: ShortText = Field(description="sha256 of its spec when read: differs from an earlier attempt's when the runtime changed in between.")


class JobStatus(ApiModel):
    """What the operator writes for any kubetune job."""

    phase: Optional[Phase] = Field(None, description="Pending, Queued, Running, Suspended, Succeeded or Failed.")
    conditions: list[Condition] = Field(
        default_factory=list, max_length=MAX_CONDITIONS,
        description="Latest observations; Succeeded is Unknown while the job runs, then True or False.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    observed_generation: Optional[int] = Field(None, description="metadata.generation the operator last acted on.")
    start_time: Optional[datetime] = Field(None, description="When the pod started running.")
    completion_time: Optional[datetime] = Field(None, description="When the job reached Succeeded or Failed.")
    job_name: Optional[ObjectName] = Field(None, description="The batch/v1 Job running the pod.")
    spec_digest: Optional[ShortText] = Field(None, description="sha256 of the spec (but spec.suspend) the job was admitted and launched with: a later attempt starts only while the spec still matches.")
    runtime: Optional[RuntimeRecord] = Field(None, description="The runtime (spec.runtime) the latest attempt launched with; each attempt reads it anew and checks it again.")
    message: Optional[MessageText] = Field(None, description="Short summary of the current state.")
    usage: Optional[Usage] = Field(None, description="Resources the job's pods used, for chargeback (written by the operator).")
    attempt: Optional[int] = Field(None, ge=1, description="The current attempt: 1, then one more per retry or resume after suspend (each attempt is one batch/v1 Job).")
    retries: int = Field(0, ge=0, description="Attempts started again after an infrastructure failure.")
    last_failure: Optional[Failure] = Field(None, description="The latest pod failure: its class (infrastructure or user), reason and message.")
    pods: list[PodRecord] = Field(default_factory=list, max_length=MAX_RECORDS, description="Every pod the job ran, across attempts: the ledger usage is summed from.")


class EvaluationSummary(ApiModel):
    eval_job: Optional[ObjectName] = Field(None, description="The EvalJob comparing base and tuned model.")
    phase: Optional[Phase] = Field(None, description="That EvalJob's phase.")
    scores: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="The tuned model's scores.")
    delta: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Tuned minus base, per metric.")
    delta_low: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Lower end of each delta's paired-bootstrap interval (evaluation.deltaInterval).")
    delta_high: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Upper end of that interval.")
    delta_level: Optional[float] = Field(None, ge=0, le=1, description="The intervals' confidence level.")
    retention_eval_job: Optional[ObjectName] = Field(None, description="The EvalJob scoring base and tuned on the retention data.")
    retention_phase: Optional[Phase] = Field(None, description="That EvalJob's phase.")
    forgetting: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Tuned minus base on the retention data (e.g. perplexity up = forgetting).")
    contaminated_rows: Optional[int] = Field(None, ge=0, description="Evaluation rows that overlap the training data (the EvalJob's status.contamination).")
    cached_models: list[ShortText] = Field(default_factory=list, max_length=MAX_MODELS, description="Models whose predictions came from an earlier evaluation (the base model, on a second job from the same base and eval set).")


class FineTuneJobStatus(JobStatus):
    progress: Optional[Progress] = Field(None, description="Training progress, reported by the trainer pod.")
    metrics: Optional[Metrics] = Field(None, description="Loss and accuracy, reported by the trainer pod.")
    artifacts: Optional[Artifacts] = Field(None, description="Where the trainer wrote its results.")
    lineage: Optional[Lineage] = Field(None, description="What the run was made of, by content: data files, base model, config, versions (reported by the pod) and the image (by the operator).")
    evaluation: Optional[EvaluationSummary] = Field(None, description="Headline scores of spec.evaluation, mirrored from its EvalJobs.")
    promotion: Optional[PromotionStatus] = Field(None, description="The promotion gate's rules with their measured values, and the copy's state.")
    serving: Optional[ServingStatus] = Field(None, description="The InferenceService of spec.promotion.serve: its name, URL and readiness as KServe reports them.")
    tracking: Optional[TrackingStatus] = Field(None, description="The MLflow run of spec.tracking (ids reported by the pods, the URL built by the operator) and the registered version.")


class FineTuneJob(ApiModel):
    """Fine-tunes a causal language model on instruction data inside a Kubernetes Job."""

    spec: FineTuneJobSpec
    status: FineTuneJobStatus = Field(default_factory=FineTuneJobStatus)


class EvalJobStatus(JobStatus):
    progress: Optional[EvalProgress] = Field(None, description="Evaluation progress, reported by the evaluator pod.")
    results: list[ModelResult] = Field(
        default_factory=list, max_length=MAX_MODELS,
        description="Scores per model, with deltas against the first. For a suite (spec.tasks), the aggregate table: each model's '<task>/<metric>' scores and 'mean', the unweighted mean over the non-perplexity tasks of each task's primary score (the first score of its first metric; BLEU divided by 100).")
    suite: list[SuiteTaskResult] = Field(default_factory=list, max_length=MAX_SUITE_TASKS, description="A suite's scores per task and model (spec.tasks).")
    samples: list[Sample] = Field(default_factory=list, max_length=MAX_SAMPLES, description="A few predictions per model.")
    contamination: Optional[Contamination] = Field(None, description="Evaluation rows that overlap the training data (spec.contamination), reported by the evaluator before any model loads.")
    artifacts: Optional[EvalArtifacts] = Field(None, description="Where the evaluator wrote scores and predictions.")
    lineage: Optional[Lineage] = Field(None, description="What the evaluation was made of, by content: data files, models and adapters, config, versions (reported by the pod) and the image (by the operator).")
    tracking: Optional[TrackingStatus] = Field(None, description="The MLflow run of spec.tracking the scores were logged to (ids reported by the pod, the URL built by the operator).")


class EvalJob(ApiModel):
    """Scores one or more models side by side (e.g. base vs fine-tuned) on a dataset inside a Kubernetes Job."""

    spec: EvalJobSpec
    status: EvalJobStatus = Field(default_factory=EvalJobStatus)
