"""The training configuration: the training part of a FineTuneJob spec.

This module is the single source of truth for what the trainer accepts. The operator embeds
these models in the FineTuneJob spec and generates the CRD from them, so a spec the API
server accepts is a config the trainer understands. It must stay light to import (pydantic
only): the operator imports it without torch.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """Base for API models: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class Method(str, Enum):
    full = "full"
    lora = "lora"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class ModelSource(ApiModel):
    path: str = Field(
        description=(
            "Where the base model is: a directory with a Hugging Face checkpoint, a .gguf "
            "file, or pkg://<python-package>/<file> for a model file shipped inside a Python "
            "package installed in the trainer image. Relative paths resolve against the "
            "container's working directory."
        ),
        min_length=1,
    )
    dtype: Dtype = Field(Dtype.auto, description="Weight dtype for training; auto picks bfloat16 on GPUs that support it, else float32.")


class DatasetSpec(ApiModel):
    path: str = Field(description="JSONL file of raw rows (one JSON object per line). Relative paths resolve against the container's working directory.", min_length=1)
    prompt_template: str = Field(
        description="Jinja template that turns a row into the prompt, e.g. 'Summarize:\\n{{ dialogue }}\\nSummary:'. Every variable must be a column of the data.",
        min_length=1,
    )
    completion_field: str = Field(description="Column holding the completion the model learns to produce.", min_length=1)
    validation_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for validation.")
    test_ratio: float = Field(0.1, ge=0.0, lt=1.0, description="Fraction of rows held out for the final test.")
    max_length: int = Field(512, ge=8, le=32768, description="Longest prompt+completion in tokens; longer rows are truncated from the prompt's start.")

    @model_validator(mode="after")
    def _ratios_leave_training_rows(self) -> "DatasetSpec":
        if self.validation_ratio + self.test_ratio >= 1.0:
            raise ValueError("dataset.validationRatio + dataset.testRatio must be below 1")
        return self


class LoraSpec(ApiModel):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(16, ge=1, le=4096, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        min_length=1,
        description="Names (suffixes) of the linear modules that get adapters.",
    )


class TrainingSpec(ApiModel):
    epochs: float = Field(1.0, gt=0, le=1000, description="Passes over the training split (ignored when maxSteps is set).")
    max_steps: Optional[int] = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, le=4096, description="Examples per device per forward pass.")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="Forward passes per optimizer step.")
    learning_rate: float = Field(2e-4, gt=0, le=1.0, description="Peak AdamW learning rate (linear decay after warmup).")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0, description="AdamW weight decay.")
    eval_every_steps: int = Field(0, ge=0, description="Validate every N optimizer steps; 0 validates only at the end.")
    log_every_steps: int = Field(1, ge=1, description="Report progress and loss every N optimizer steps.")
    seed: int = Field(42, ge=0, description="Seed for the data split, shuffling and initialisation.")


class OutputSpec(ApiModel):
    path: str = Field(description="Directory for the adapter or model, tokenizer and training_summary.json.", min_length=1)


class TrainingConfig(ApiModel):
    """Everything the trainer needs; the FineTuneJob spec embeds these fields."""

    model: ModelSource = Field(description="The base model to fine-tune.")
    dataset: DatasetSpec = Field(description="Raw rows and how they become prompt/completion pairs.")
    method: Method = Field(Method.lora, description="Which parameters train: full (all) or lora (low-rank adapters).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA settings, used when method is lora.")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="Optimisation settings.")
    output: OutputSpec = Field(description="Where results are written.")


TRAINING_FIELDS = tuple(TrainingConfig.model_fields)


def load_config(path: str | Path) -> TrainingConfig:
    """Reads a YAML or JSON training config (camelCase or snake_case keys)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return TrainingConfig.model_validate(data)
