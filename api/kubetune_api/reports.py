"""What a pod reports about its job: progress, metrics, results, artifacts and lineage.

A pod has no API access: it prints these as report lines in its log and its termination
message; the operator validates them against these models (bounded, like the CRD's status
schema, which embeds the same classes) and copies them into the status. They are shown, never
the basis of what the operator decides. Light to import: pydantic only.
"""
from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import Field, StringConstraints

from kubetune_api.base import (MAX_COLUMN, MAX_LIST, MAX_MODELS, MAX_SAMPLES, MAX_SCORES, ApiModel, PathText, Scores,
                                ShortText)
from kubetune_api.evaluation import MAX_SUITE_TASKS
from kubetune_api.tracking import TrackingReport

STATUS_DECIMALS = 4
# A sample's text, shortened by the evaluator to a few hundred characters.
SampleText = Annotated[str, StringConstraints(max_length=4 * MAX_COLUMN)]


def rounded(value):
    """Floats to STATUS_DECIMALS places, for `kubectl get` (training_summary.json keeps full precision)."""
    if isinstance(value, float):
        return round(value, STATUS_DECIMALS)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def merged(base: Any, update: Any) -> Any:
    """`update` applied to `base` as a JSON merge patch applies it (objects merge, the rest replaces):
    how a report adds to what a pod reported before, and how the status takes it."""
    if not isinstance(update, dict) or not isinstance(base, dict):
        return update
    return {**base, **{key: merged(base.get(key), value) for key, value in update.items()}}


class DownloadProgress(ApiModel):
    """A source being fetched in the check phase (hf://, s3://, gs://, az://), before training starts."""

    source: PathText = Field(description="The URI being fetched, as the spec gives it.")
    bytes: int = Field(0, ge=0, description="Bytes fetched so far (of this source).")
    total_bytes: Optional[int] = Field(None, ge=0, description="Bytes to fetch, once known.")
    bytes_per_second: Optional[float] = Field(None, ge=0, description="Mean rate since this source's download started.")
    done: bool = Field(False, description="The source is local now (downloaded, or found in the cache).")


class Progress(ApiModel):
    download: Optional[DownloadProgress] = Field(None, description="The latest source fetched before training (model, data): bytes, total and rate.")
    upload: Optional[DownloadProgress] = Field(None, description="The upload to output.uri after training (source is output.uri): bytes, total and rate.")
    step: int = Field(0, ge=0, description="Optimizer steps done.")
    total_steps: int = Field(0, ge=0, description="Optimizer steps planned.")
    epoch: float = Field(0.0, ge=0, description="Fractional epoch reached.")
    percent: float = Field(0.0, ge=0, le=100, description="step / totalSteps, in percent.")
    eta_seconds: Optional[float] = Field(None, ge=0, description="Estimated seconds to the end of training.")
    tokens_per_second: Optional[float] = Field(None, ge=0, description="Non-padding tokens processed per second.")
    train_tokens: Optional[int] = Field(None, ge=0, description="Non-padding tokens trained on so far (status.usage.trainingTokens).")
    train_seconds: Optional[float] = Field(None, ge=0, description="Seconds spent training so far, over all attempts; loading, evaluation and checkpoints not counted.")
    resumed_from_step: Optional[int] = Field(None, ge=0, description="The checkpoint step this attempt resumed from (after a retry or a suspend).")
    resumed_tokens: Optional[int] = Field(None, ge=0, description="trainTokens restored from that checkpoint: this attempt trained trainTokens - resumedTokens.")
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
    tasks: Optional[dict[ShortText, TaskMetrics]] = Field(None, max_length=MAX_LIST, description="Per-task validation and test numbers of a multi-task mixture (dataset.tasks), by task name.")
    retention_loss_before: Optional[float] = Field(None, description="Completion cross-entropy on dataset.retention before training.")
    retention_loss_after: Optional[float] = Field(None, description="Completion cross-entropy on dataset.retention after training.")
    retention_loss_change: Optional[float] = Field(None, description="retentionLossAfter - retentionLossBefore; positive means forgetting.")
    retention_accuracy_before: Optional[float] = Field(None, description="Next-token accuracy on dataset.retention before training.")
    retention_accuracy_after: Optional[float] = Field(None, description="Next-token accuracy on dataset.retention after training.")
    retention_accuracy_change: Optional[float] = Field(None, description="retentionAccuracyAfter - retentionAccuracyBefore; negative means forgetting.")


class Artifacts(ApiModel):
    output_path: Optional[PathText] = Field(None, description="Directory holding everything the run wrote.")
    model_path: Optional[PathText] = Field(None, description="The saved adapter (PEFT format) or full model.")
    summary_path: Optional[PathText] = Field(None, description="training_summary.json.")
    uri: Optional[PathText] = Field(None, description="output.uri: where the model, tokenizer, summary, predictions and model card were uploaded.")


# Objects listed per model in the lineage; a sharded checkpoint has tens, and the report line is bounded.
MAX_OBJECTS = 64


class ObjectVersion(ApiModel):
    """One object read from an object store, as the store identifies its content."""

    key: PathText = Field(description="The object's key, relative to the URI's prefix ('' for the URI itself).")
    etag: ShortText = Field(description="The store's ETag (S3: an MD5 of the bytes, or of the parts for a multipart upload).")
    version_id: Optional[ShortText] = Field(None, description="The object's version id, on a bucket with versioning.")


class DatasetLineage(ApiModel):
    role: ShortText = Field(description="What the file is for: train (the file split into train/validation/test), validation, test, task:<name> (a mixture or suite task; task:<name>/validation, /test, /few-shot), retention, eval (an EvalJob's dataset), few-shot (its fewShot.path).")
    uri: PathText = Field(description="The path or URI as the spec gives it.")
    sha256: ShortText = Field(description="sha256 (hex) of the file's bytes as stored, as sha256sum prints it; for a directory saved by save_to_disk, of its manifest (see model.digest).")
    rows: Optional[int] = Field(None, ge=0, description="Rows read from it, before any split (at most maxExamples where one applies).")
    bytes: Optional[int] = Field(None, ge=0, description="Size in bytes (all files of a directory).")
    commit: Optional[ShortText] = Field(None, description="hf:// files: the commit sha the revision resolved to.")
    cache_hit: Optional[bool] = Field(None, description="hf:// files: found in the model cache (no download).")
    etag: Optional[ShortText] = Field(None, description="s3://, gs://, az:// files: the object's ETag.")
    version_id: Optional[ShortText] = Field(None, description="s3://, gs://, az:// files: the object's version id, where the bucket keeps versions.")


class ModelLineage(ApiModel):
    name: Optional[ShortText] = Field(None, description="The EvalJob model it belongs to (models[].name); unset for a FineTuneJob's base model.")
    role: ShortText = Field("base", description="base (the model path) or adapter (a PEFT adapter applied on it).")
    uri: PathText = Field(description="The path as the spec gives it (pkg:// included).")
    digest: ShortText = Field(description="sha256:<hex> of the file, or of a directory's manifest: one line 'relative/path<TAB>sha256 hex' per file, sorted by path.")
    files: int = Field(1, ge=1, description="Files the digest covers.")
    revision: Optional[ShortText] = Field(None, description="hf:// models: the revision the spec names (main when it names none).")
    commit: Optional[ShortText] = Field(None, description="hf:// models: the commit sha that revision resolved to; the cache is keyed by it.")
    cache_hit: Optional[bool] = Field(None, description="hf:// models: the commit was in the model cache already (no download).")
    objects: Optional[list[ObjectVersion]] = Field(None, max_length=MAX_OBJECTS, description=f"s3://, gs://, az:// models: each object's ETag (the first {MAX_OBJECTS} by key).")


class Lineage(ApiModel):
    """What a run was made of, by content: the same lineage and seed give the same results."""

    datasets: list[DatasetLineage] = Field(default_factory=list, max_length=4 * MAX_LIST, description="Every data file the run read.")
    model: Optional[ModelLineage] = Field(None, description="The base model (FineTuneJob).")
    models: Optional[list[ModelLineage]] = Field(None, max_length=2 * MAX_MODELS, description="Every model and adapter evaluated (EvalJob).")
    config_hash: Optional[ShortText] = Field(None, description="sha256:<hex> of the resolved config as canonical JSON (sorted keys, defaults filled in, output.path left out).")
    versions: Optional[dict[ShortText, ShortText]] = Field(None, max_length=MAX_COLUMN, description="Python and library versions, by package.")
    image: Optional[PathText] = Field(None, description="The image the pod ran: its containerStatuses imageID (a digest), else its image name. Set by the operator.")


class PodReport(ApiModel):
    """What a trainer pod reports (its log's report line), and the summary in its termination message."""

    progress: Optional[Progress] = None
    metrics: Optional[Metrics] = None
    artifacts: Optional[Artifacts] = None
    lineage: Optional[Lineage] = None
    tracking: Optional[TrackingReport] = None


class EvalProgress(ApiModel):
    download: Optional[DownloadProgress] = Field(None, description="The latest source fetched before evaluating (models, data): bytes, total and rate.")
    model: Optional[ShortText] = Field(None, description="Model being evaluated now.")
    done: int = Field(0, ge=0, description="Examples done, over all models.")
    total: int = Field(0, ge=0, description="Examples to do, over all models.")
    percent: float = Field(0.0, ge=0, le=100, description="done / total, in percent.")


class ModelResult(ApiModel):
    model: ShortText = Field(description="The model's name in the EvalJob spec.")
    scores: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Metric name -> corpus score (e.g. rouge1, rougeL, bleu, exactMatch, accuracy, perplexity); ROUGE is F1 in 0-1, BLEU 0-100. Precision, recall and confidence intervals are in scores.json. A suite's status.results (the aggregate): '<task>/<metric>' and 'mean'.")
    delta: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Score minus the first model's score, per metric.")
    delta_low: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Per metric, the lower end of the delta's paired-bootstrap interval (spec.deltaInterval); scores that are not a sum over rows (BLEU) have none.")
    delta_high: Scores = Field(default_factory=dict, max_length=MAX_SCORES, description="Per metric, the upper end of that interval.")
    delta_level: Optional[float] = Field(None, ge=0, le=1, description="The intervals' confidence level.")
    examples: int = Field(0, ge=0, description="Examples scored.")
    cached: Optional[bool] = Field(None, description="The predictions came from an earlier evaluation (spec.reusePredictions): the model did not run.")
    predictions_path: Optional[PathText] = Field(None, description="JSONL of this model's predictions.")


class Sample(ApiModel):
    model: ShortText = Field(description="Which model produced the prediction.")
    prompt: SampleText = Field(description="The prompt (shortened).")
    prediction: SampleText = Field(description="What the model produced (shortened).")
    reference: SampleText = Field("", description="The first reference (shortened).")
    task: Optional[ShortText] = Field(None, description="The suite task it belongs to (spec.tasks[].name).")


class EvalArtifacts(ApiModel):
    output_path: Optional[PathText] = Field(None, description="Directory holding everything the evaluation wrote.")
    scores_path: Optional[PathText] = Field(None, description="scores.json.")
    report_path: Optional[PathText] = Field(None, description="report.md: the scores as a Markdown table (models as rows), with deltas against the first model.")


class SuiteTaskResult(ApiModel):
    name: ShortText = Field(description="The task's name in spec.tasks.")
    task: ShortText = Field(description="generation, multiple-choice or perplexity.")
    examples: int = Field(0, ge=0, description="Examples of this task scored per model.")
    results: list[ModelResult] = Field(default_factory=list, max_length=MAX_MODELS, description="This task's scores per model, with deltas against the first.")


class Contamination(ApiModel):
    """How many evaluation rows overlap the training data (spec.contamination)."""

    action: ShortText = Field(description="flag or refuse (a refused job fails instead).")
    ngram: int = Field(ge=1, description="Words in the n-grams compared.")
    rows: int = Field(0, ge=0, description="Evaluation rows compared (every task's, in a suite).")
    overlapping: int = Field(0, ge=0, description="Rows that share an n-gram of their own with a training row, or are identical to one.")
    identical: int = Field(0, ge=0, description="Of those, rows identical to a training row (all their text, case, punctuation and spacing aside).")
    lines: list[PathText] = Field(default_factory=list, max_length=20, description="The first overlapping rows: '<file> line <n>'.")
    training_files: int = Field(0, ge=0, description="Training files read.")
    training_rows: int = Field(0, ge=0, description="Training rows read.")
    unread_files: list[PathText] = Field(default_factory=list, max_length=20, description="Training files that could not be read (missing, or not mounted in this pod), left out of the comparison (with action refuse, the job fails instead).")


class EvalPodReport(ApiModel):
    """What an evaluator pod reports (its log's report line), and the summary in its termination message."""

    progress: Optional[EvalProgress] = None
    results: Optional[list[ModelResult]] = Field(None, max_length=MAX_MODELS)
    suite: Optional[list[SuiteTaskResult]] = Field(None, max_length=MAX_SUITE_TASKS)
    samples: Optional[list[Sample]] = Field(None, max_length=MAX_SAMPLES)
    contamination: Optional[Contamination] = None
    artifacts: Optional[EvalArtifacts] = None
    lineage: Optional[Lineage] = None
    tracking: Optional[TrackingReport] = None
