"""Where a job writes its results: output.path, and for training output.uri (an upload)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field, field_validator

from kubetune_api.base import MAX_PATH, ApiModel
from kubetune_api.paths import check_relative_stays_inside
from kubetune_api.sources import check_output_uri


class OutputSpec(ApiModel):
    path: str = Field(
        min_length=1, max_length=4096,
        description=(
            "Directory for the results: relative to the container's working directory (no '..' that leaves it), or "
            "absolute on one of the job's writable volumes."
        ),
    )

    @field_validator("path")
    @classmethod
    def _stays_inside(cls, path: str) -> str:
        return check_relative_stays_inside(path, "output.path")


class TrainingOutputSpec(OutputSpec):
    uri: Optional[str] = Field(
        None, min_length=1, max_length=MAX_PATH,
        description=(
            "Also upload the results to this object-store prefix (s3://, gs://, az://) after training: the adapter or "
            "model, the tokenizer, training_summary.json and the model card (rank 0, after they are written to path). "
            "It must not exist yet: an upload never overwrites. Credentials come from the runtime's env."
        ),
    )

    @field_validator("uri")
    @classmethod
    def _object_store(cls, uri: Optional[str]) -> Optional[str]:
        return check_output_uri(uri, "output.uri")
