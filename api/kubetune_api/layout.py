"""The files a job writes under its output.path, named once.

The trainer, the evaluator and the promotion pod write these; the operator builds every path
it hands a pod from them (the promotion's sources, an EvalJob's model), never from a path a pod
reported, so a pod cannot point the operator at someone else's files.
"""
from __future__ import annotations

from kubetune_api.catalog import produces_full_model

SUMMARY = "training_summary.json"
MODEL_CARD = "README.md"
PREDICTIONS = "predictions.jsonl"
SCORES = "scores.json"
ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
# An evaluation block's EvalJobs write under the FineTuneJob's output, in these directories.
EVAL_DIR = "eval"
RETENTION_DIR = "retention"


def join(output_path: str, *names: str) -> str:
    return "/".join([output_path.rstrip("/"), *names])


def model_dir_name(method: str, merge_on_save: bool) -> str:
    """adapter for a PEFT adapter, model for a full (or merged) model."""
    return MODEL_DIR if produces_full_model(method, merge_on_save) else ADAPTER_DIR


def trained_model(output_path: str, method: str, merge_on_save: bool) -> str:
    """Where a FineTuneJob's trained adapter or model lies."""
    return join(output_path, model_dir_name(method, merge_on_save))
