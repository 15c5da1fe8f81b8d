"""Names both sides of the contract must spell the same: API group and plurals, condition
types, the labels on children, and what the operator hands a pod (config file, env vars,
termination log)."""
from __future__ import annotations

GROUP = "kubetune.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
FINETUNEJOB_KIND = "FineTuneJob"
EVALJOB_KIND = "EvalJob"
FINETUNEJOB_PLURAL = "finetunejobs"
EVALJOB_PLURAL = "evaljobs"
DEFAULT_IMAGE = "ghcr.io/kubetune/trainer:0.1.0"

# Condition types the operator sets.
CONDITION_SUCCEEDED = "Succeeded"
CONDITION_EVALUATED = "Evaluated"
CONDITION_PROMOTED = "Promoted"
CONDITION_SUSPENDED = "Suspended"
CONDITION_SERVING = "Serving"

# The pod's config file: a ConfigMap mounted at CONFIG_DIR.
CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.yaml"
TERMINATION_LOG = "/dev/termination-log"

# Environment the operator gives every pod it launches.
ENV_TERMINATION_LOG = "KUBETUNE_TERMINATION_LOG"
# Colon-separated directories the pod may write under besides its working directory
# (the job's writable volumes); outputs resolving elsewhere are refused.
ENV_WRITABLE_ROOTS = "KUBETUNE_WRITABLE_ROOTS"
# Multi-node jobs: a random secret per attempt, the same in every rank's pod; each process proves
# it holds it right after the process group forms, so nothing else can join as a rank.
ENV_RENDEZVOUS_TOKEN = "KUBETUNE_RENDEZVOUS_TOKEN"
# Comma-separated metric names the evaluator may load through the `evaluate` package (which runs
# the metric's script); empty by default: only kubetune's built-in metrics.
ENV_ALLOWED_EVALUATE_METRICS = "KUBETUNE_ALLOWED_EVALUATE_METRICS"

# The pod runs as this user (kubetune's images' USER) with a read-only root filesystem; these
# directories are emptyDir volumes (unless a spec volume mounts exactly there), and the cache
# variables point into CACHE_DIR, as the images set them.
DEFAULT_RUN_AS_USER = 65532
WORKSPACE = "/workspace"  # the images' WORKDIR: relative paths in a spec resolve here
CACHE_DIR = "/home/kubetune/.cache"
CACHE_ENV = {
    "XDG_CACHE_HOME": CACHE_DIR,
    "HF_HOME": f"{CACHE_DIR}/huggingface",
    "KUBETUNE_CACHE": f"{CACHE_DIR}/kubetune",
    "TRITON_CACHE_DIR": f"{CACHE_DIR}/triton",
}
# Volume name -> mount path of the pod's writable directories.
WRITABLE_DIRS = {"kubetune-tmp": "/tmp", "kubetune-cache": CACHE_DIR, "kubetune-workspace": WORKSPACE}
MODEL_CACHE_VOLUME = "kubetune-model-cache"  # a runtime's modelCache
RESERVED_VOLUMES = ("config", *WRITABLE_DIRS, MODEL_CACHE_VOLUME)
RESERVED_MOUNT_PATHS = (CONFIG_DIR,)

# Job names become pod label values (<= 63 chars) with a suffix the Job controller adds.
MAX_NAME_LENGTH = 52

# Pods have no API access: they print their report as one line of the container's log,
# REPORT_PREFIX followed by compact JSON of everything reported so far, at most
# MAX_REPORT_BYTES; the operator reads the latest such line and validates it.
REPORT_PREFIX = "kubetune-report "
MAX_REPORT_BYTES = 64 * 1024

# Runtimes (kubetune_api.runtimes): what an admin gives pods, named by a job's spec.runtime.
CLUSTER_RUNTIME_KIND = "ClusterTrainingRuntime"
RUNTIME_KIND = "TrainingRuntime"
CLUSTER_RUNTIME_PLURAL = "clustertrainingruntimes"
RUNTIME_PLURAL = "trainingruntimes"
# A runtime's modelCache: the shared Hugging Face Hub cache volume's mount path, handed to the
# pod in this variable (unset: the pod keeps its own cache under CACHE_DIR).
ENV_MODEL_CACHE = "KUBETUNE_MODEL_CACHE"
DEFAULT_MODEL_CACHE_PATH = "/var/cache/kubetune/models"
# A runtime's hub block becomes these (huggingface_hub reads them).
ENV_HUB_ENDPOINT = "HF_ENDPOINT"
ENV_HUB_TOKEN = "HF_TOKEN"
# Env names a runtime may not set: the operator's own (every KUBETUNE_* name, multi-node ones
# included), the pod name and the cache variables above.
RESERVED_ENV_PREFIX = "KUBETUNE_"
RESERVED_ENV = ("POD_NAME", *CACHE_ENV)
