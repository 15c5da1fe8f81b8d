"""What every API model shares: camelCase on the wire, unknown fields refused, and the name
patterns Kubernetes itself enforces (checked before any name reaches an API path)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, StringConstraints
from pydantic.alias_generators import to_camel

# RFC 1123 label: Jobs, Services, ServiceAccounts and pod label values.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# RFC 1123 subdomain: ConfigMaps, PersistentVolumeClaims, custom resources.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_MAX = 253
# Model labels in results and in file names (predictions-<name>.jsonl): no separators.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"

# Bounds on what a user writes: far beyond any real job, low enough that nonsense (a
# negative size, a 10k-character name, a billion steps) is refused by the API server.
MAX_PATH = 4096  # a path, URL or object-store URI (Linux PATH_MAX)
MAX_TEMPLATE = 65536  # a Jinja template or a text (64 KiB)
MAX_COLUMN = 256  # a column name, module name, metric name or stop string
MAX_LIST = 256  # entries of a list of names or patterns
MAX_STEPS = 10_000_000  # optimizer steps, and any "every N steps"
MAX_ROWS = 100_000_000  # rows of a dataset
MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
MAX_TOKENS = 131072  # a sequence length in tokens
MAX_MODELS = 16  # models scored side by side in one EvalJob
# Status bounds: what the operator writes, and what it accepts from a pod's report, never
# exceeds these (the CRD's status schema enforces them too).
MAX_MESSAGE = 32768  # a condition's or a failure's message (metav1.Condition's bound)
MAX_SCORES = 512  # scores of one model: a suite of 32 tasks with their headline metrics
MAX_SAMPLES = 64  # predictions shown in an EvalJob's status
MAX_RECORDS = 200  # pods in a job's ledger: backoffLimit is at most 20, suspends are rare
MAX_CONDITIONS = 16
# A positive Kubernetes quantity (resource.Quantity's grammar without a sign): a number with a
# non-zero digit, then a binary (Ki..Ei) or decimal (n, u, m, k, M..E) suffix or an exponent.
QUANTITY_PATTERN = (r"^(([0-9]*[1-9][0-9]*(\.[0-9]*)?)|([0-9]*\.[0-9]*[1-9][0-9]*))"
                    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?[0-9]{1,2}))?$")
MAX_QUANTITY = 32
# A list of short strings (module names, patterns, columns, metrics, stop strings).
NameList = list[Annotated[str, StringConstraints(min_length=1, max_length=MAX_COLUMN)]]
# A short name in a status: a reason, a metric, a model's or a task's name, a digest.
ShortText = Annotated[str, StringConstraints(max_length=MAX_COLUMN)]
PathText = Annotated[str, StringConstraints(max_length=MAX_PATH)]
MessageText = Annotated[str, StringConstraints(max_length=MAX_MESSAGE)]
ObjectName = Annotated[str, StringConstraints(max_length=DNS_SUBDOMAIN_MAX)]
# Metric name -> value.
Scores = dict[ShortText, float]


class Phase(str, Enum):
    """Where a kubetune job (or a step of one, such as its promotion) stands."""

    Pending = "Pending"
    Queued = "Queued"  # a queue (Kueue) holds the Job until it admits it
    Running = "Running"
    Suspended = "Suspended"  # spec.suspend: pods stopped; resumes from the latest checkpoint
    Succeeded = "Succeeded"
    Failed = "Failed"


class ApiModel(BaseModel):
    """Base for API models: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


ModelT = TypeVar("ModelT", bound=BaseModel)


def load_model_file(model: type[ModelT], path: str | Path) -> ModelT:
    """Reads a YAML or JSON config file (camelCase or snake_case keys) as `model`."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return model.model_validate(data)
