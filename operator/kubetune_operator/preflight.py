"""What the CRD schema cannot check, decided from the spec alone before any pod is launched.

A spec that fails here becomes a Failed FineTuneJob or EvalJob with a reason naming the
field, and no Job. The operator opens no file and renders no template a user wrote: checks
that need the data or the model (files exist, rows parse, templates render, the model loads)
run in the pod's own check phase, with the job's identity and volumes, and come back as the
same named reasons through the termination message.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Collection, Optional, TypeVar

from pydantic import BaseModel, ValidationError

import kubetune_api as api
from kubetune_api import layout
from kubetune_api.catalog import hub_metric_names, produces_full_model
from kubetune_api.errors import MetricError, Reason
from kubetune_api.serving import serve_name
from kubetune_api.evaluation import MAX_TRAINING_FILES, EvalConfig, EvalModel, TrainingFile
from kubetune_operator import shared

ModelT = TypeVar("ModelT", bound=BaseModel)


class Invalid(Exception):
    """The spec can never work: the job fails with this reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class NotReady(Invalid):
    """The spec may work later (e.g. a referenced FineTuneJob is still training)."""


# A cross-field rule's message that starts with the field it is about ("output.path: ...").
_NAMES_A_FIELD = re.compile(r"[a-z][A-Za-z0-9]*(\[[^\]]*\])?[.:\[]")


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        message = item["msg"].removeprefix("Value error, ")
        if where:
            parts.append(f"spec.{where}: {message}")
        else:
            parts.append(f"spec.{message}" if _NAMES_A_FIELD.match(message) else f"spec: {message}")
    return "; ".join(parts)


def _parse(model: type[ModelT], name: str, spec: dict) -> ModelT:
    if len(name) > api.MAX_NAME_LENGTH:
        raise Invalid(Reason.InvalidName, f"metadata.name must be at most {api.MAX_NAME_LENGTH} characters (is {len(name)})")
    try:
        return model.model_validate(spec)
    except ValidationError as error:
        raise Invalid(Reason.InvalidSpec, _field_errors(error)) from None


def _check_metrics(task_metrics: list[tuple[str, api.EvalTask, list[str]]], allow_hub: bool = True,
                   allowed: Collection[str] = ()) -> None:
    """Built-in metrics for the task; an `evaluate` metric (which runs a script in the pod) only
    when the operator's settings allow it by name."""
    try:
        for field, task, metrics in task_metrics:
            for name in hub_metric_names(task, metrics, field, allow_hub):
                if name not in allowed:
                    raise Invalid(Reason.UnknownMetric,
                                  f"spec.{field}: {name!r} is not a built-in metric, and loading it through the evaluate "
                                  f"package runs code this operator allows only by name "
                                  f"({', '.join(sorted(allowed)) or 'none allowed'}; KUBETUNE_ALLOWED_EVALUATE_METRICS)")
    except MetricError as error:
        raise Invalid(error.reason, f"spec.{error}") from None


def validate(name: str, spec: dict) -> api.FineTuneJobSpec:
    """Returns the parsed FineTuneJob spec, or raises Invalid(reason, message naming the field)."""
    parsed = _parse(api.FineTuneJobSpec, name, spec)
    if parsed.promotion is not None and parsed.promotion.serve is not None:
        try:
            serve_name(name, parsed.promotion.serve)  # unset: the job's name must fit KServe's names
        except ValueError as error:
            raise Invalid(Reason.InvalidSpec, f"spec.{error}") from None
    if parsed.resources.nodes > 1 and shared.config.indexed_jobs:
        problem = pod_hostname_problem(name, parsed.resources.nodes, parsed.backoff_limit)
        if problem:
            raise Invalid(Reason.InvalidName, problem)
    evaluation = parsed.evaluation
    if evaluation is not None:  # the EvalJob it creates after training must not fail on its metrics
        # Built-in names only (the schema's enum too): a Hub metric would be tried after training.
        _check_metrics([("evaluation.metrics", evaluation.task, [m.value for m in evaluation.metrics])], allow_hub=False)
    return parsed


def pod_hostname_problem(name: str, nodes: int, backoff_limit: int) -> Optional[str]:
    """Why the pods of a multi-node job's Indexed Job would get no hostname, or None: the Job
    controller names each `<job>-<index>`, uncut, and a hostname is a DNS label (no dots, at most
    63 characters), so such a job would only fail once launched."""
    from kubetune_operator import builders  # builders -> runtimes -> preflight: imported when used
    from kubetune_operator.attempts import job_name

    longest = f"{job_name(builders.child_name(name, builders.FINETUNE), backoff_limit + 1)}-{nodes - 1}"
    if "." not in name and len(longest) <= 63:
        return None
    return (f"metadata.name {name!r}: a multi-node job's pods take their Job's name and rank as hostname "
            f"(<name>-train[-<attempt>]-<rank>, here up to {longest!r}), which must be a DNS label: no dots and at "
            f"most 63 characters ({len(longest)}); choose a shorter name without dots")


def tuned_model(ref: api.EvalModelRef, ftj: Optional[dict]) -> EvalModel:
    """The model a FineTuneJob produced, as the evaluator loads it."""
    where = f"spec.models[{ref.name}].fineTuneJob"
    if ftj is None:
        raise Invalid(Reason.FineTuneJobNotFound, f"{where}: FineTuneJob {ref.fine_tune_job!r} does not exist")
    status = ftj.get("status") or {}
    phase = status.get("phase")
    if phase == api.Phase.Failed.value:
        raise Invalid(Reason.FineTuneJobFailed, f"{where}: FineTuneJob {ref.fine_tune_job!r} failed: {status.get('message', '')}")
    if phase != api.Phase.Succeeded.value:
        raise NotReady(Reason.WaitingForFineTuneJob, f"waiting for FineTuneJob {ref.fine_tune_job!r} to succeed (now {phase or 'Pending'})")
    spec = ftj["spec"]  # as the API server stored it, defaults filled in
    method, merged = spec.get("method", api.Method.lora), (spec.get("lora") or {}).get("mergeOnSave", False)
    # Where the layout puts the trained model under the spec's output, not a path its pod reported.
    model_path = layout.trained_model(spec["output"]["path"], method, merged)
    if produces_full_model(method, merged):
        return EvalModel(name=ref.name, path=model_path, dtype=ref.dtype)
    return EvalModel(name=ref.name, path=spec["model"]["path"], adapter=model_path, dtype=ref.dtype)


def validate_eval_spec(name: str, spec: dict, allowed_metrics: Collection[str] = ()) -> api.EvalJobSpec:
    """The parsed EvalJob spec, from the spec alone: FineTuneJob references are not looked up
    (the admission webhook stops here; the operator then resolves them in validate_eval).
    `allowed_metrics`: the evaluate metrics the operator's settings allow."""
    parsed = _parse(api.EvalJobSpec, name, spec)
    _check_metrics(parsed.task_metrics(), allowed=allowed_metrics)  # the dataset's, or every suite task's
    return parsed


def validate_eval(name: str, spec: dict, lookup: Callable[[str], Optional[dict]],
                  allowed_metrics: Collection[str] = ()) -> tuple[api.EvalJobSpec, EvalConfig]:
    """The parsed EvalJob spec and the evaluator's config with FineTuneJob references resolved.

    `lookup(name)` reads a FineTuneJob in the EvalJob's namespace (None when absent); names
    reach it only after the schema checked they are valid Kubernetes names."""
    parsed = validate_eval_spec(name, spec, allowed_metrics)
    jobs = {ref.fine_tune_job: lookup(ref.fine_tune_job) for ref in parsed.models if ref.fine_tune_job}
    models = [tuned_model(ref, jobs[ref.fine_tune_job]) if ref.fine_tune_job
              else EvalModel(name=ref.name, path=ref.path, adapter=ref.adapter, dtype=ref.dtype)
              for ref in parsed.models]
    return parsed, with_training_files(parsed.eval_config(models), [job["spec"] for job in jobs.values()])


def with_training_files(config: EvalConfig, trained: list[dict]) -> EvalConfig:
    """The config whose contamination check also reads what these FineTuneJob specs trained on:
    the dataset's file, or each mixture task's (from the specs, never from what a pod reported)."""
    contamination = config.contamination
    known = {(f.path, f.format) for f in contamination.training_files}
    added = []
    for spec in trained:
        dataset = spec.get("dataset") or {}
        for part in dataset.get("tasks") or [dataset]:
            found = TrainingFile(path=part.get("path", ""), format=part.get("format", "auto")) if part.get("path") else None
            if found is not None and (found.path, found.format) not in known:
                known.add((found.path, found.format))
                added.append(found)
    if len(contamination.training_files) + len(added) > MAX_TRAINING_FILES:
        raise Invalid(Reason.InvalidSpec, f"spec.contamination.trainingFiles: with the fineTuneJob models' training files "
                                          f"there are {len(contamination.training_files) + len(added)}, more than {MAX_TRAINING_FILES}")
    files = contamination.model_copy(update={"training_files": [*contamination.training_files, *added]})
    return config.model_copy(update={"contamination": files})


# After creation only spec.suspend may change: the webhook refuses other changes, and without
# it the operator says it ignores them.
MUTABLE = ("suspend",)


def changed_fields(old: Any, new: Any, path: str = "spec") -> list[str]:
    """Paths that differ between two specs, down to the first field that is not an object."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [changed for key in dict.fromkeys([*old, *new])
                for changed in changed_fields(old.get(key), new.get(key), f"{path}.{key}")]
    return [] if old == new else [path]


def immutable_changes(old_spec: dict[str, Any], new_spec: dict[str, Any]) -> list[str]:
    """The changed spec fields other than the mutable ones."""
    def fixed(spec: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in (spec or {}).items() if key not in MUTABLE}
    return changed_fields(fixed(old_spec), fixed(new_spec))


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 of the spec's immutable fields as canonical JSON: recorded when a job launches, so
    each later attempt runs only the spec that was admitted."""
    fixed = {key: value for key, value in (spec or {}).items() if key not in MUTABLE}
    return shared.digest(fixed)
