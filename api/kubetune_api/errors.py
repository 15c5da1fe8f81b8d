"""Why a job is where it is: the reasons of its conditions, and the errors a pod reports as
the user's fault.

Each error carries its `reason`; the pod writes it to its termination message and the
operator copies it into the Succeeded=False condition. The CLIs give each kind its own
exit code.
"""
from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    """Every reason the operator puts on a kubetune condition (besides a kubelet waiting reason,
    such as ImagePullBackOff, which it passes through while the pod cannot start)."""

    # Refused before any pod launches (the spec alone decides).
    InvalidSpec = "InvalidSpec"
    InvalidName = "InvalidName"
    UnknownMetric = "UnknownMetric"
    FineTuneJobNotFound = "FineTuneJobNotFound"
    FineTuneJobFailed = "FineTuneJobFailed"
    WaitingForFineTuneJob = "WaitingForFineTuneJob"
    # Runtimes and the admin's policy (refused at apply; again at each launch, which reads them anew).
    RuntimeNotFound = "RuntimeNotFound"
    RuntimeNotAllowed = "RuntimeNotAllowed"
    RuntimeConflict = "RuntimeConflict"
    PolicyViolation = "PolicyViolation"
    # Found by the pod's check phase, with the job's own identity and volumes; never retried.
    InvalidConfig = "InvalidConfig"
    InvalidModel = "InvalidModel"
    InvalidDataset = "InvalidDataset"
    # A model, data file or output URI (hf://, s3://, gs://, az://) the pod could not reach; never retried.
    SourceNotFound = "SourceNotFound"
    RevisionNotFound = "RevisionNotFound"
    SourceUnauthorized = "SourceUnauthorized"
    SourceUnavailable = "SourceUnavailable"
    # The Job and its pod.
    JobMissing = "JobMissing"
    JobCreated = "JobCreated"
    PodPending = "PodPending"
    Unschedulable = "Unschedulable"
    Running = "Running"
    Retrying = "Retrying"
    Completed = "Completed"
    TrainerFailed = "TrainerFailed"
    EvaluatorFailed = "EvaluatorFailed"
    PromoterFailed = "PromoterFailed"
    OOMKilled = "OOMKilled"
    DeadlineExceeded = "DeadlineExceeded"
    JobFailed = "JobFailed"
    # Infrastructure failures (retried up to backoffLimit; a pod's own reason, such as Evicted, passes through).
    Preempted = "Preempted"
    KilledBySignal = "KilledBySignal"
    PodFailed = "PodFailed"
    PodLost = "PodLost"
    RanksNotScheduled = "RanksNotScheduled"
    # The API server or an admission controller refused a child object.
    JobRejected = "JobRejected"
    GangSchedulingUnavailable = "GangSchedulingUnavailable"
    SpecChanged = "SpecChanged"
    PodRejected = "PodRejected"
    QuotaExceeded = "QuotaExceeded"
    Forbidden = "Forbidden"
    # spec.suspend and queues.
    Suspended = "Suspended"
    Resumed = "Resumed"
    Queued = "Queued"
    # The Evaluated condition of a FineTuneJob with an evaluation block.
    EvaluationPending = "EvaluationPending"
    Evaluating = "Evaluating"
    Evaluated = "Evaluated"
    EvaluationFailed = "EvaluationFailed"
    # The Promoted condition of a FineTuneJob with a promotion block.
    PromotionPending = "PromotionPending"
    Promoting = "Promoting"
    Promoted = "Promoted"
    GateFailed = "GateFailed"
    PromotionFailed = "PromotionFailed"
    # The Tracked condition of a job with spec.tracking (never changes its phase).
    Tracked = "Tracked"
    TrackingFailed = "TrackingFailed"
    # The Serving condition of a FineTuneJob with promotion.serve (KServe's InferenceService).
    KServeNotInstalled = "KServeNotInstalled"
    ServingPending = "ServingPending"
    Serving = "Serving"
    ServingFailed = "ServingFailed"
    ServingConflict = "ServingConflict"
    ServingRejected = "ServingRejected"


# What each reason means, for docs/reference/reasons.md (docgen) and nowhere else.
REASON_DOCS = {
    Reason.InvalidSpec: "the spec breaks a rule the schema cannot express (mutually exclusive fields, ratios, method blocks, paths)",
    Reason.InvalidName: "metadata.name is too long for the child objects' names",
    Reason.UnknownMetric: "a metric is not valid for the task, or cannot be loaded",
    Reason.FineTuneJobNotFound: "an EvalJob names a FineTuneJob that does not exist",
    Reason.FineTuneJobFailed: "an EvalJob names a FineTuneJob that failed",
    Reason.WaitingForFineTuneJob: "an EvalJob waits for the FineTuneJob it names to succeed",
    Reason.RuntimeNotFound: "spec.runtime names a ClusterTrainingRuntime or TrainingRuntime that does not exist",
    Reason.RuntimeNotAllowed: "the ClusterTrainingRuntime does not allow the job's namespace (its namespaces and namespaceSelector)",
    Reason.RuntimeConflict: "the spec sets a field its runtime sets (image, placement, securityContext), or reuses a volume name or path of the runtime's",
    Reason.PolicyViolation: "the spec breaks the operator's policy (runtimes required, allowed images, priority classes, tolerations, node-selector keys, UIDs, GPUs) or its runtime's resource limits",
    Reason.InvalidConfig: "the config does not fit what it names (e.g. target modules the model lacks)",
    Reason.InvalidModel: "the pod's check found no loadable model at the path",
    Reason.InvalidDataset: "the pod's check found a missing file, a bad row, or a template that fails or breaks its limits",
    Reason.SourceNotFound: "a hf:// repo or file, or an object-store bucket or key, does not exist (the message names the URI and field)",
    Reason.RevisionNotFound: "the hf:// repo exists but has no such branch, tag or commit",
    Reason.SourceUnauthorized: "the Hub or the object store refused the credentials (401/403): a gated or private repo without hub.tokenSecret, or keys without access",
    Reason.SourceUnavailable: "the source could not be reached (network, timeout, server error, offline mode with nothing cached, a missing fsspec package); not retried",
    Reason.JobMissing: "the batch/v1 Job is not created yet",
    Reason.JobCreated: "the Job exists, its pod does not yet",
    Reason.PodPending: "the pod is starting",
    Reason.Unschedulable: "no node can take the pod (e.g. no free GPU)",
    Reason.Running: "the pod runs",
    Reason.Retrying: "an attempt failed for an infrastructure reason; the next one resumes from the latest checkpoint",
    Reason.Completed: "the pod finished its work",
    Reason.TrainerFailed: "the trainer exited with an error it did not classify",
    Reason.EvaluatorFailed: "the evaluator exited with an error it did not classify",
    Reason.PromoterFailed: "the promotion pod exited with an error it did not classify",
    Reason.OOMKilled: "the pod ran out of memory",
    Reason.DeadlineExceeded: "activeDeadlineSeconds passed",
    Reason.JobFailed: "the Job failed with no pod failure to explain it (infrastructure: retried)",
    Reason.Preempted: "the cluster took the pod away (preemption, taint eviction, API eviction); retried",
    Reason.KilledBySignal: "the container was killed by a signal (exit code above 128) without running out of memory; retried",
    Reason.PodFailed: "the pod failed before its container ran; retried",
    Reason.PodLost: "a pod of a multi-node attempt disappeared while running and the other ranks failed without it; retried",
    Reason.RanksNotScheduled: "not every rank of a multi-node attempt started within gang.timeoutSeconds of its first pod: the attempt's Jobs were deleted (its pods hold nothing) and it is retried like an eviction",
    Reason.SpecChanged: "the spec changed after the job was admitted (while no admission webhook answered); the next attempt would run a spec nobody checked, so none starts: delete and re-create the job",
    Reason.JobRejected: "the API server refused the Job (the message is the API's); a spec the schema let through",
    Reason.GangSchedulingUnavailable: "the pods' scheduler is a coscheduling one (KUBETUNE_COSCHEDULING_SCHEDULERS) but the cluster serves no PodGroup API, or has no Indexed Jobs (Kubernetes before 1.22): no pod launches ungated",
    Reason.PodRejected: "the Job cannot create its pod (e.g. a PriorityClass that does not exist); the message is the API's",
    Reason.QuotaExceeded: "(Pending) a ResourceQuota refuses the pod for now; it starts when quota frees up",
    Reason.Forbidden: "(Pending) the operator may not create a child object; it retries until RBAC allows it",
    Reason.Suspended: "(Suspended) spec.suspend is true: the pods are stopped",
    Reason.Resumed: "(Suspended=False) spec.suspend went back to false: a new attempt resumes from the latest checkpoint",
    Reason.Queued: "(Queued) Kueue holds the Job until its queue admits it",
    Reason.EvaluationPending: "(Evaluated) the evaluation EvalJobs are not created yet",
    Reason.Evaluating: "(Evaluated) the evaluation EvalJobs run",
    Reason.Evaluated: "(Evaluated) base and tuned model are scored",
    Reason.EvaluationFailed: "(Evaluated) an evaluation EvalJob failed",
    Reason.PromotionPending: "(Promoted) waiting for training and evaluation to finish",
    Reason.Promoting: "(Promoted) every rule holds; the promotion pod copies the model to the destination",
    Reason.Promoted: "(Promoted) the model, tokenizer, model card, scores and lineage are at the destination",
    Reason.GateFailed: "(Promoted) a promotion rule does not hold (or its metric is missing); the message lists each rule with its value",
    Reason.PromotionFailed: "(Promoted) the promotion pod failed; nothing is left at the destination",
    Reason.Tracked: "(Tracked) the pods log to the MLflow run in status.tracking (and the promotion registered its version)",
    Reason.TrackingFailed: "(Tracked) a pod could not log to the tracking server (down, refusing, bad credentials) after its retries and went on without it; the job's phase is not affected",
    Reason.KServeNotInstalled: "(Serving) the cluster serves no serving.kserve.io/v1beta1 InferenceService API: nothing to create; the job still Succeeds, and the operator looks again now and then",
    Reason.ServingPending: "(Serving) the InferenceService exists; KServe does not report it Ready yet",
    Reason.Serving: "(Serving) KServe reports the InferenceService Ready; status.serving.url is where it answers",
    Reason.ServingFailed: "(Serving) KServe reports the InferenceService not Ready (its reason and message follow)",
    Reason.ServingConflict: "(Serving) an InferenceService of that name exists that kubetune did not create, or that another FineTuneJob owns: it is left alone",
    Reason.ServingRejected: "(Serving) the API server (RBAC, KServe's webhook) refused to create or update the InferenceService; the message is the API's",
}

# Reasons that name the user's mistake: retrying the pod cannot help.
# Source errors are among them: a missing repo or wrong keys stay wrong, and a source that does
# not answer is not retried either (each attempt would wait out the same timeouts again).
USER_ERRORS = frozenset(r.value for r in (Reason.InvalidConfig, Reason.InvalidModel, Reason.InvalidDataset, Reason.UnknownMetric,
                                          Reason.SourceNotFound, Reason.RevisionNotFound, Reason.SourceUnauthorized,
                                          Reason.SourceUnavailable))


class ConfigError(ValueError):
    """The config is valid on its own but does not fit what it names (model, modules)."""

    reason = Reason.InvalidConfig.value


class ModelSourceError(ConfigError):
    """model.path does not name a loadable model."""

    reason = Reason.InvalidModel.value


class MetricError(ConfigError):
    """A metric name that is not built in for the task and cannot be loaded."""

    reason = Reason.UnknownMetric.value


class DataError(ValueError):
    """The dataset or prompt template cannot produce training examples."""

    reason = Reason.InvalidDataset.value


class SourceError(ConfigError):
    """A model, data or output URI could not be resolved; subclasses carry the reason."""

    reason = Reason.SourceUnavailable.value


class SourceNotFoundError(SourceError):
    reason = Reason.SourceNotFound.value


class RevisionNotFoundError(SourceError):
    reason = Reason.RevisionNotFound.value


class SourceUnauthorizedError(SourceError):
    reason = Reason.SourceUnauthorized.value


class SourceUnavailableError(SourceError):
    reason = Reason.SourceUnavailable.value
