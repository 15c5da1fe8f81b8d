"""Promotion gates and usage accounting: a FineTuneJob's `spec.promotion` (rules over its
evaluation and where a passing model goes), what the operator reports back
(`status.promotion`, `status.usage`), and the config of the `kubetune-promote` pod.
Light to import: pydantic only.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Optional

from pydantic import Field, model_validator

from kubetune_api.base import ApiModel, ObjectName, PathText, Phase, ShortText, load_model_file
from kubetune_api.paths import check_relative_stays_inside
from kubetune_api.serving import ServeSpec
from kubetune_api.tracking import TrackingSpec
from kubetune_api.training import ModelSource

# Object stores the promotion pod writes to through fsspec (the image needs s3fs, gcsfs or adlfs).
OBJECT_STORE_SCHEMES = ("s3://", "gs://", "az://")


def is_object_store(path: str) -> bool:
    return path.startswith(OBJECT_STORE_SCHEMES)


class PromotionRule(ApiModel):
    metric: str = Field(min_length=1, max_length=128, description="A score name as in status.evaluation.scores (e.g. rougeL, exactMatch, bleu, accuracy).")
    min_score: Optional[float] = Field(None, description="The tuned model's score must be at least this.")
    min_delta: Optional[float] = Field(None, description="Tuned minus base must be at least this (status.evaluation.delta).")
    min_delta_lower_bound: Optional[float] = Field(
        None, description="The lower end of the delta's paired-bootstrap interval (status.evaluation.deltaLow, at evaluation.deltaInterval.level) must be at least this: 0 asks for an improvement that is not chance.")

    @model_validator(mode="after")
    def _has_a_bound(self) -> "PromotionRule":
        if self.min_score is None and self.min_delta is None and self.min_delta_lower_bound is None:
            raise ValueError(f"promotion.rules[{self.metric}]: set minScore, minDelta and/or minDeltaLowerBound")
        return self


class ExportFormat(str, Enum):
    gguf = "gguf"


class GgufQuantization(str, Enum):
    """Weight types the exporter writes (numpy, through the gguf package) and llama.cpp and
    transformers read; 1-D tensors (norms) stay F32 whatever is chosen, as llama.cpp keeps them."""

    F32 = "F32"
    F16 = "F16"
    BF16 = "BF16"
    Q8_0 = "Q8_0"


class ModelExport(ApiModel):
    format: ExportFormat = Field(ExportFormat.gguf, description="gguf: one llama.cpp file, model.<quantization>.gguf, next to the promoted model (Llama-architecture models with a byte-level BPE tokenizer).")
    quantization: GgufQuantization = Field(GgufQuantization.F16, description="F32, F16, BF16 or Q8_0 (8-bit blocks; a matrix whose rows do not split into blocks of 32 stays F16).")


class PromotionSpec(ApiModel):
    """When and where a tuned model is promoted once training and evaluation succeed."""

    rules: list[PromotionRule] = Field(default_factory=list, max_length=64, description="Every rule must hold on spec.evaluation's results.")
    max_forgetting: dict[str, float] = Field(
        default_factory=dict, max_length=64,
        description="Metric -> the largest allowed tuned-minus-base change on evaluation.retention (status.evaluation.forgetting; e.g. perplexity: 0.5).")
    destination: str = Field(
        min_length=1, max_length=4096,
        description="Where the promoted model goes: a directory relative to the container's working directory (no '..' that leaves it) or absolute on one of the job's writable volumes, or an object-store URI (s3://, gs://, az://; the image needs s3fs, gcsfs or adlfs). It must not exist yet.")
    merge_adapter: bool = Field(False, description="Merge the LoRA adapter into the base model and promote a full model (methods lora and qlora).")
    export: Optional[ModelExport] = Field(
        None, description="Also write the promoted model in another format next to it. Needs a full model: method full or selective, or lora/qlora with mergeAdapter (or lora.mergeOnSave).")
    serve: Optional[ServeSpec] = Field(
        None, description="Serve the promoted model with KServe: an InferenceService created once it is promoted (condition Serving, status.serving). The destination must be one KServe reads: s3://, gs://, or a path on one of the job's volumes (pvc://).")

    @model_validator(mode="after")
    def _relative_stays_inside(self) -> "PromotionSpec":
        if not is_object_store(self.destination):
            check_relative_stays_inside(self.destination, "promotion.destination")
        return self


class RuleCheck(str, Enum):
    min_score = "minScore"
    min_delta = "minDelta"
    min_delta_lower_bound = "minDeltaLowerBound"
    max_forgetting = "maxForgetting"


class RuleResult(ApiModel):
    metric: ShortText = Field(description="The metric the rule is about.")
    check: RuleCheck = Field(description="minScore, minDelta, minDeltaLowerBound or maxForgetting.")
    threshold: float = Field(description="The bound the rule sets.")
    value: Optional[float] = Field(None, description="The measured value (minDeltaLowerBound: the interval's lower end); absent when the evaluation did not report it.")
    high: Optional[float] = Field(None, description="minDeltaLowerBound: the interval's upper end.")
    level: Optional[float] = Field(None, ge=0, le=1, description="minDeltaLowerBound: the interval's confidence level.")
    passed: bool = Field(description="Whether the rule holds.")


class PromotionStatus(ApiModel):
    phase: Optional[Phase] = Field(None, description="Pending (waiting for the evaluation), Running (copying), Succeeded or Failed (the gate or the copy).")
    destination: Optional[PathText] = Field(None, description="Where the model is (or would have been) promoted.")
    job_name: Optional[ObjectName] = Field(None, description="The batch/v1 Job copying the model.")
    rules: list[RuleResult] = Field(default_factory=list, max_length=128, description="Each rule with its measured value.")


class Usage(ApiModel):
    gpu_seconds: float = Field(0.0, ge=0, description="GPUs x running seconds, summed over every pod (attempts and nodes).")
    pod_seconds: float = Field(0.0, ge=0, description="Running seconds summed over every pod.")
    attempts: int = Field(0, ge=0, description="Pods that started.")
    training_tokens: Optional[int] = Field(None, ge=0, description="Non-padding tokens trained on over every attempt (each attempt's pod counts what it trained after its checkpoint), from the trainers' reports.")
    estimated_cost: Optional[float] = Field(None, ge=0, description="gpuSeconds / 3600 x the operator's GPU-hour price (unset without one).")
    currency: Optional[ShortText] = Field(None, description="Currency of estimatedCost.")


class PromoteConfig(ApiModel):
    """The kubetune-promote pod's config: what to copy where (the operator writes it)."""

    model_path: str = Field(min_length=1, description="The adapter or full model directory to promote.")
    adapter: bool = Field(description="Whether model_path is a PEFT adapter.")
    base_model: Optional[ModelSource] = Field(None, description="The base model, to merge the adapter into.")
    merge_adapter: bool = Field(False, description="Merge the adapter into the base and promote a full model.")
    export: Optional[ModelExport] = Field(None, description="As in spec.promotion.export.")
    files: dict[str, str] = Field(default_factory=dict, description="Name in the destination -> source file, copied when it exists.")
    destination: str = Field(min_length=1, description="As in spec.promotion.destination.")
    record: dict[str, Any] = Field(default_factory=dict, description="Written as promotion.json: the gate, evaluation and lineage.")
    tracking: Optional[TrackingSpec] = Field(None, description="The job's spec.tracking: the promoted model is logged to its run and registered (registeredModel).")

    @model_validator(mode="after")
    def _mergeable(self) -> "PromoteConfig":
        if self.merge_adapter and (not self.adapter or self.base_model is None):
            raise ValueError("mergeAdapter needs an adapter and its base model")
        if self.export is not None and self.adapter and not self.merge_adapter:
            raise ValueError("export needs a full model: an adapter must be merged (mergeAdapter)")
        return self


def load_promote_config(path: str) -> PromoteConfig:
    return load_model_file(PromoteConfig, path)
