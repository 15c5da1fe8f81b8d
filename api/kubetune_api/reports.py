"""What a trainer pod reports into its FineTuneJob's status.

The pod owns exactly these status fields (`progress`, `metrics`, `artifacts`, `lineage` but its
`image`); the operator owns `phase`, `conditions`, the timestamps and `lineage.image`. The operator's status model embeds these
classes, so the CRD's status schema and what the trainer sends cannot drift apart.
Light to import: pydantic only.
"""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from kubetune_api.base import ApiModel

STATUS_DECIMALS = 4


def _rounded(value):
    if isinstance(value, float):
        return round(value, STATUS_DECIMALS)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


class Progress(ApiModel):
    step: int = Field(0, ge=0, description="Optimizer steps done.")
    total_steps: int = Field(0, ge=0, description="Optimizer steps planned.")
    epoch: float = Field(0.0, ge=0, description="Fractional epoch reached.")
    percent: float = Field(0.0, ge=0, le=100, description="step / totalSteps, in percent.")
    eta_seconds: Optional[float] = Field(None, ge=0, description="Estimated seconds to the end of training.")
    tokens_per_second: Optional[float] = Field(None, ge=0, description="Non-padding tokens processed per second.")
    train_tokens: Optional[int] = Field(None, ge=0, description="Non-padding tokens trained on so far (status.usage.trainingTokens).")
    train_seconds: Optional[float] = Field(None, ge=0, description="Seconds spent training so far, over all attempts; loading, evaluation and checkpoints not counted.")
    resumed_from_step: Optional[int] = Field(None, ge=0, description="The checkpoint step this attempt resumed from (after a retry or a suspend).")
    checkpoint_step: Optional[int] = Field(None, ge=0, description="The step of the latest checkpoint: where the next attempt would resume.")


class TaskMetrics(ApiModel):
    validation_loss: Optional[float] = Field(None, description="Completion cross-entropy on this task's validation rows, at the end.")
    validation_accuracy: Optional[float] = Field(None, description="Next-token accuracy on this task's validation completion tokens, at the end.")
    test_loss: Optional[float] = Field(None, description="Completion cross-entropy on this task's test rows, at the end.")
    test_accuracy: Optional[float] = Field(None, description="Next-token accuracy on this task's test completion tokens, at the end.")


class Metrics(ApiModel):
    train_loss: Optional[float] = Field(None, description="Mean completion cross-entropy over the last logging window.")
    validation_loss: Optional[float] = Field(None, description="Completion cross-entropy on the validation split (all tasks, weighted by completion tokens).")
    validation_accuracy: Optional[float] = Field(None, description="Next-token accuracy on validation completion tokens.")
    test_loss: Optional[float] = Field(None, description="Completion cross-entropy on the test split, at the end.")
    test_accuracy: Optional[float] = Field(None, description="Next-token accuracy on test completion tokens, at the end.")
    tasks: Optional[dict[str, TaskMetrics]] = Field(None, description="Per-task validation and test numbers of a multi-task mixture (dataset.tasks), by task name.")
    retention_loss_before: Optional[float] = Field(None, description="Completion cross-entropy on dataset.retention before training.")
    retention_loss_after: Optional[float] = Field(None, description="Completion cross-entropy on dataset.retention after training.")
    retention_loss_change: Optional[float] = Field(None, description="retentionLossAfter - retentionLossBefore; positive means forgetting.")
    retention_accuracy_before: Optional[float] = Field(None, description="Next-token accuracy on dataset.retention before training.")
    retention_accuracy_after: Optional[float] = Field(None, description="Next-token accuracy on dataset.retention after training.")
    retention_accuracy_change: Optional[float] = Field(None, description="retentionAccuracyAfter - retentionAccuracyBefore; negative means forgetting.")


class Artifacts(ApiModel):
    output_path: Optional[str] = Field(None, description="Directory holding everything the run wrote.")
    model_path: Optional[str] = Field(None, description="The saved adapter (PEFT format) or full model.")
    summary_path: Optional[str] = Field(None, description="training_summary.json.")


class DatasetLineage(ApiModel):
    role: str = Field(description="What the file is for: train (the file split into train/validation/test), validation, test, task:<name> (a mixture or suite task; task:<name>/validation, /test, /few-shot), retention, eval (an EvalJob's dataset), few-shot (its fewShot.path).")
    uri: str = Field(description="The path or URI as the spec gives it.")
    sha256: str = Field(description="sha256 (hex) of the file's bytes as stored, as sha256sum prints it; for a directory saved by save_to_disk, of its manifest (see model.digest).")
    rows: Optional[int] = Field(None, ge=0, description="Rows read from it, before any split (at most maxExamples where one applies).")
    bytes: Optional[int] = Field(None, ge=0, description="Size in bytes (all files of a directory).")


class ModelLineage(ApiModel):
    name: Optional[str] = Field(None, description="The EvalJob model it belongs to (models[].name); unset for a FineTuneJob's base model.")
    role: str = Field("base", description="base (the model path) or adapter (a PEFT adapter applied on it).")
    uri: str = Field(description="The path as the spec gives it (pkg:// included).")
    digest: str = Field(description="sha256:<hex> of the file, or of a directory's manifest: one line 'relative/path<TAB>sha256 hex' per file, sorted by path.")
    files: int = Field(1, ge=1, description="Files the digest covers.")


class Lineage(ApiModel):
    """What a run was made of, by content: the same lineage and seed give the same results."""

    datasets: list[DatasetLineage] = Field(default_factory=list, description="Every data file the run read.")
    model: Optional[ModelLineage] = Field(None, description="The base model (FineTuneJob).")
    models: Optional[list[ModelLineage]] = Field(None, description="Every model and adapter evaluated (EvalJob).")
    config_hash: Optional[str] = Field(None, description="sha256:<hex> of the resolved config as canonical JSON (sorted keys, defaults filled in, output.path left out).")
    versions: Optional[dict[str, str]] = Field(None, description="Python and library versions, by package.")
    image: Optional[str] = Field(None, description="The image the pod ran: its containerStatuses imageID (a digest), else its image name. Set by the operator.")


class PodReport(ApiModel):
    """The status patch a trainer pod sends, and the summary in its termination message."""

    progress: Optional[Progress] = None
    metrics: Optional[Metrics] = None
    artifacts: Optional[Artifacts] = None
    lineage: Optional[Lineage] = None

    def as_status_patch(self) -> dict:
        """The merge patch for the status subresource; numbers rounded for `kubectl get`
        (training_summary.json keeps full precision)."""
        return {"status": _rounded(self.model_dump(by_alias=True, exclude_none=True, mode="json"))}


class EvalProgress(ApiModel):
    model: Optional[str] = Field(None, description="Model being evaluated now.")
    done: int = Field(0, ge=0, description="Examples done, over all models.")
    total: int = Field(0, ge=0, description="Examples to do, over all models.")
    percent: float = Field(0.0, ge=0, le=100, description="done / total, in percent.")


class ModelResult(ApiModel):
    model: str = Field(description="The model's name in the EvalJob spec.")
    scores: dict[str, float] = Field(default_factory=dict, description="Metric name -> corpus score (e.g. rouge1, rougeL, bleu, exactMatch, accuracy, perplexity); ROUGE is F1 in 0-1, BLEU 0-100. Precision, recall and confidence intervals are in scores.json. A suite's status.results (the aggregate): '<task>/<metric>' and 'mean'.")
    delta: dict[str, float] = Field(default_factory=dict, description="Score minus the first model's score, per metric.")
    examples: int = Field(0, ge=0, description="Examples scored.")
    predictions_path: Optional[str] = Field(None, description="JSONL of this model's predictions.")


class Sample(ApiModel):
    model: str = Field(description="Which model produced the prediction.")
    prompt: str = Field(description="The prompt (shortened).")
    prediction: str = Field(description="What the model produced.")
    reference: str = Field("", description="The first reference.")
    task: Optional[str] = Field(None, description="The suite task it belongs to (spec.tasks[].name).")


class EvalArtifacts(ApiModel):
    output_path: Optional[str] = Field(None, description="Directory holding everything the evaluation wrote.")
    scores_path: Optional[str] = Field(None, description="scores.json.")
    report_path: Optional[str] = Field(None, description="report.md: the scores as a Markdown table (models as rows), with deltas against the first model.")


class SuiteTaskResult(ApiModel):
    name: str = Field(description="The task's name in spec.tasks.")
    task: str = Field(description="generation, multiple-choice or perplexity.")
    examples: int = Field(0, ge=0, description="Examples of this task scored per model.")
    results: list[ModelResult] = Field(default_factory=list, description="This task's scores per model, with deltas against the first.")


class EvalPodReport(ApiModel):
    """The status patch an evaluator pod sends, and the summary in its termination message."""

    progress: Optional[EvalProgress] = None
    results: Optional[list[ModelResult]] = None
    suite: Optional[list[SuiteTaskResult]] = None
    samples: Optional[list[Sample]] = None
    artifacts: Optional[EvalArtifacts] = None
    lineage: Optional[Lineage] = None

    as_status_patch = PodReport.as_status_patch
