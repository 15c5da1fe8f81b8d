"""Per-task validation/test numbers of a mixture, and the retention set before and after training.

Both use the training loop's own `evaluate` (completion-token cross-entropy and next-token
accuracy, each process scoring a share and the sums reduced), so every process must call them.
The overall validation/test numbers stay the train loop's: those are over all tasks' rows
together, i.e. weighted by completion tokens.
"""
from __future__ import annotations

import logging

from kubetune_trainer.data.tokenization import Collator, PreparedData
from kubetune_api.reports import Metrics, TaskMetrics

log = logging.getLogger(__name__)


def _evaluate(model, items, pad_id: int, batch_size: int, accelerator):
    from kubetune_trainer.training.loop import evaluate

    return evaluate(model, items, Collator(pad_id), batch_size, accelerator)


def score_retention(model, data: PreparedData, pad_id: int, batch_size: int, accelerator) -> tuple[float | None, float | None] | None:
    """(loss, accuracy) on the retention rows, or None without a retention set. Call it before
    training (the model is moved to the accelerator's device unless already placed by a device map)."""
    if not data.retention:
        return None
    from kubetune_trainer.training.fsdp import is_sharded

    if getattr(model, "hf_device_map", None) is None and not is_sharded(model):  # FSDP placed its shards
        model.to(accelerator.device)
    loss, accuracy = _evaluate(model, data.retention, pad_id, batch_size, accelerator)
    if loss is not None:
        log.info("retention before training: loss %.4f accuracy %.4f", loss, accuracy)
    return loss, accuracy


def finish_metrics(metrics: Metrics, model, data: PreparedData, pad_id: int, batch_size: int, accelerator,
                   retention_before: tuple[float | None, float | None] | None) -> Metrics:
    """Adds per-task numbers (mixtures) and the retention change to `metrics`, after training."""
    tasks = data.tasks()
    if tasks:
        per_task = {name: TaskMetrics() for name in tasks}
        for split in ("validation", "test"):
            for name, items in data.by_task(split).items():
                loss, accuracy = _evaluate(model, items, pad_id, batch_size, accelerator) if items else (None, None)
                setattr(per_task[name], f"{split}_loss", loss)
                setattr(per_task[name], f"{split}_accuracy", accuracy)
        metrics.tasks = per_task
        log.info("per-task: %s", {name: m.model_dump(by_alias=True, exclude_none=True) for name, m in per_task.items()})
    if retention_before is not None:
        loss, accuracy = _evaluate(model, data.retention, pad_id, batch_size, accelerator)
        before_loss, before_accuracy = retention_before
        metrics.retention_loss_before, metrics.retention_accuracy_before = before_loss, before_accuracy
        metrics.retention_loss_after, metrics.retention_accuracy_after = loss, accuracy
        if loss is not None and before_loss is not None:
            metrics.retention_loss_change = loss - before_loss
            metrics.retention_accuracy_change = accuracy - before_accuracy
            log.info("retention after training: loss %.4f (%+.4f) accuracy %.4f (%+.4f)", loss,
                     metrics.retention_loss_change, accuracy, metrics.retention_accuracy_change)
    return metrics
