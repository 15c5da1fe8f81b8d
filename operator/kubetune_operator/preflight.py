"""What the CRD schema cannot check, checked before any pod is launched.

A spec that fails here becomes a Failed FineTuneJob with a reason naming the problem, and no
Job. Files are checked when the operator can see them: paths on the job's own volumes
(PVCs) are left to the trainer, which reports the same errors from the pod.
"""
from __future__ import annotations

from pydantic import ValidationError

from kubetune_operator import api
from kubetune_operator.builders import MAX_NAME_LENGTH
from kubetune_trainer.errors import DataError, ModelSourceError
from kubetune_trainer.modelpath import resolve_path
from kubetune_trainer.rows import check_dataset


class Invalid(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _field_errors(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        parts.append(f"spec.{where}: {item['msg']}" if where else f"spec: {item['msg']}")
    return "; ".join(parts)


def _on_volume(path: str, spec: api.FineTuneJobSpec) -> bool:
    return any(path == v.mount_path or path.startswith(v.mount_path.rstrip("/") + "/") for v in spec.volumes)


def validate(name: str, spec: dict, check_files: bool = True) -> api.FineTuneJobSpec:
    """Returns the parsed spec, or raises Invalid(reason, message naming the field or file)."""
    if len(name) > MAX_NAME_LENGTH:
        raise Invalid("InvalidName", f"metadata.name must be at most {MAX_NAME_LENGTH} characters (is {len(name)})")
    try:
        parsed = api.FineTuneJobSpec.model_validate(spec)
    except ValidationError as error:
        raise Invalid("InvalidSpec", _field_errors(error)) from None
    if not check_files:
        return parsed
    if not _on_volume(parsed.model.path, parsed):
        try:
            resolve_path(parsed.model.path)
        except ModelSourceError as error:
            raise Invalid("InvalidModel", f"spec.{error}") from None
    if not _on_volume(parsed.dataset.path, parsed):
        try:
            check_dataset(parsed.dataset)
        except DataError as error:
            raise Invalid("InvalidDataset", f"spec.dataset: {error}") from None
    return parsed
