"""What the CRD schema cannot check, checked before any pod is launched.

A spec that fails here becomes a Failed FineTuneJob or EvalJob with a reason naming the
problem, and no Job. Files are checked when the operator can see them: paths on the job's
own volumes (PVCs) are left to the pod, which reports the same errors.
"""
from __future__ import annotations

from typing import Callable, Optional, TypeVar

from pydantic import BaseModel, ValidationError

from kubetune_operator import api
from kubetune_operator.builders import MAX_NAME_LENGTH
from kubetune_trainer.errors import DataError, MetricError, ModelSourceError
from kubetune_trainer.evalconfig import EvalConfig, EvalModel
from kubetune_trainer.evaluation.dataset import check_eval_dataset
from kubetune_trainer.evaluation.metrics import hub_metric_names
from kubetune_trainer.modelpath import resolve_path
from kubetune_trainer.rows import check_dataset


ModelT = TypeVar("ModelT", bound=BaseModel)
# Methods whose output is a whole model rather than an adapter on the base model.
FULL_MODEL_METHODS = {"full", "selective"}


class Invalid(Exception):
    """The spec can never work: the job fails with this reason."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class NotReady(Invalid):
    """The spec may work later (e.g. a referenced FineTuneJob is still training)."""


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        parts.append(f"spec.{where}: {item['msg']}" if where else f"spec: {item['msg']}")
    return "; ".join(parts)


def _on_volume(path: str, spec: api.Placement) -> bool:
    return any(path == v.mount_path or path.startswith(v.mount_path.rstrip("/") + "/") for v in spec.volumes)


def _parse(model: type[ModelT], name: str, spec: dict) -> ModelT:
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid("InvalidName", f"metadata.name must be at most {MAX_NAME_LENGTH} characters (is {len(name)})")
    try:
        return model.model_validate(spec)
    except ValidationError as error:
        raise Invalid("InvalidSpec", _field_errors(error)) from None


def _check_model(path: str, field: str, placement: api.Placement) -> None:
    if not _on_volume(path, placement):
        try:
            resolve_path(path)
        except ModelSourceError as error:
            raise Invalid("InvalidModel", f"spec.{field}: {error}") from None


def validate(name: str, spec: dict, check_files: bool = True) -> api.FineTuneJobSpec:
    """Returns the parsed FineTuneJob spec, or raises Invalid(reason, message naming the field or file)."""
    parsed = _parse(api.FineTuneJobSpec, name, spec)
    if not check_files:
        return parsed
    _check_model(parsed.model.path, "model.path", parsed)
    try:  # every file the dataset names (tasks, split files, retention) except those on the job's volumes
        check_dataset(parsed.dataset, skip=lambda path: _on_volume(path, parsed))
    except DataError as error:
        raise Invalid("InvalidDataset", f"spec.dataset: {error}") from None
    return parsed


def tuned_model(ref: api.EvalModelRef, ftj: Optional[dict]) -> EvalModel:
    """The model a FineTuneJob produced, as the evaluator loads it."""
    if ftj is None:
        raise Invalid("FineTuneJobNotFound", f"spec.models[{ref.name}].fineTuneJob: FineTuneJob {ref.fine_tune_job!r} does not exist")
    status = ftj.get("status") or {}
    phase = status.get("phase")
    if phase == api.Phase.Failed.value:
        raise Invalid("FineTuneJobFailed", f"spec.models[{ref.name}].fineTuneJob: FineTuneJob {ref.fine_tune_job!r} failed: {status.get('message', '')}")
    model_path = (status.get("artifacts") or {}).get("modelPath")
    if phase != api.Phase.Succeeded.value or not model_path:
        raise NotReady("WaitingForFineTuneJob", f"waiting for FineTuneJob {ref.fine_tune_job!r} to succeed (now {phase or 'Pending'})")
    spec = ftj["spec"]
    full = spec.get("method") in FULL_MODEL_METHODS or (spec.get("lora") or {}).get("mergeOnSave")
    if full:
        return EvalModel(name=ref.name, path=model_path, dtype=ref.dtype)
    return EvalModel(name=ref.name, path=spec["model"]["path"], adapter=model_path, dtype=ref.dtype)


def validate_eval(name: str, spec: dict, lookup: Callable[[str], Optional[dict]],
                  check_files: bool = True) -> tuple[api.EvalJobSpec, EvalConfig]:
    """The parsed EvalJob spec and the evaluator's config with FineTuneJob references resolved.

    `lookup(name)` reads a FineTuneJob in the EvalJob's namespace (None when absent)."""
    parsed = _parse(api.EvalJobSpec, name, spec)
    models = [tuned_model(ref, lookup(ref.fine_tune_job)) if ref.fine_tune_job
              else EvalModel(name=ref.name, path=ref.path, adapter=ref.adapter, dtype=ref.dtype)
              for ref in parsed.models]
    config = parsed.eval_config(models)
    try:
        hub_metric_names(config)
    except MetricError as error:
        raise Invalid(error.reason, f"spec.{error}") from None
    if check_files:
        for i, model in enumerate(models):
            if not parsed.models[i].fine_tune_job:
                _check_model(model.path, f"models[{model.name}].path", parsed)
        if not _on_volume(config.dataset.path, parsed):
            try:
                check_eval_dataset(config)
            except DataError as error:
                raise Invalid("InvalidDataset", f"spec.dataset: {error}") from None
    return parsed, config
