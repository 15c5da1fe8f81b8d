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

# The pod's config file: a ConfigMap mounted at CONFIG_DIR.
CONFIG_DIR = "/etc/kubetune"
CONFIG_FILE = "config.yaml"
TERMINATION_LOG = "/dev/termination-log"

# Environment the operator gives every pod it launches.
ENV_JOB_NAME = "KUBETUNE_JOB_NAME"
ENV_JOB_PLURAL = "KUBETUNE_JOB_PLURAL"
ENV_JOB_NAMESPACE = "KUBETUNE_JOB_NAMESPACE"
ENV_TERMINATION_LOG = "KUBETUNE_TERMINATION_LOG"
# Colon-separated directories the pod may write under besides its working directory
# (the job's writable volumes); outputs resolving elsewhere are refused.
ENV_WRITABLE_ROOTS = "KUBETUNE_WRITABLE_ROOTS"

# Job names become pod label values (<= 63 chars) with a suffix the Job controller adds.
MAX_NAME_LENGTH = 52
