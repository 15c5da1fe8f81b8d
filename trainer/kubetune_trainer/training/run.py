"""One training run: config in; trained adapter or model, tokenizer, predictions, model card
and summary out. Under `accelerate launch` every process trains; only the main one writes.

The check phase (kubetune_trainer.checks) runs first, before the Accelerator or the model,
and every file goes under the output directory it resolved (see kubetune_trainer.outputs).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from kubetune_api import layout
from kubetune_api.reports import Artifacts, PodReport
from kubetune_api.training import TrainingConfig
from kubetune_trainer.training import fsdp, rendezvous
from kubetune_trainer.training.allocator import allocator_in_use
from kubetune_trainer.training.checkpoint import Checkpoints
from kubetune_trainer.training.sharded_checkpoint import ShardedCheckpoints
from kubetune_trainer.checks import check_training
from kubetune_trainer.reporting.lineage import training_lineage
from kubetune_trainer.model.methods import METHODS, ParameterCount, count_parameters
from kubetune_trainer.model.loading import bf16_supported, load_model
from kubetune_trainer.reporting.modelcard import write_model_card
from kubetune_trainer.training.predictions import write_predictions
from kubetune_trainer.data.splits import load_splits
from kubetune_trainer.sources import objects
from kubetune_trainer.reporting.status_reporter import StatusReporter
from kubetune_trainer.training.task_metrics import finish_metrics, score_retention
from kubetune_trainer.data.tokenization import tokenize_splits
from kubetune_trainer.reporting.tracking import finish_training, reporting, start_training
from kubetune_trainer.training.loop import train
from kubetune_trainer.reporting.versions import library_versions

log = logging.getLogger(__name__)

SUMMARY_FILE, PREDICTIONS_FILE, MODEL_CARD_FILE = layout.SUMMARY, layout.PREDICTIONS, layout.MODEL_CARD


def _prepare(model, config: TrainingConfig, method, checkpoint: Path) -> tuple[object, ParameterCount]:
    """The model to train, as the method makes it, and its parameter counts."""
    if config.training.gradient_checkpointing:
        # Non-reentrant checkpointing needs no input that requires grad, so frozen bases work too.
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = method.prepare(model, config, checkpoint)
    params = count_parameters(model)
    log.info("%s: %d of %d parameters trainable", config.method.value, params.trainable, params.total)
    return model, params


def _summary(config: TrainingConfig, result, *, checkpoint: Path, counts: dict, params: ParameterCount,
             accelerator, n_predictions: int, artifacts: Artifacts, started: float, lineage) -> dict:
    """training_summary.json: config, data, metrics, history, throughput, artifacts, versions, lineage."""
    output = Path(artifacts.output_path)
    return {
        "config": config.model_dump(by_alias=True, mode="json"),
        "model": {"path": config.model.path, "checkpoint": str(checkpoint)},
        "data": counts,
        "parameters": {"trainable": params.trainable, "total": params.total},
        "processes": accelerator.num_processes,
        "fsdp": config.training.fsdp.enabled,
        # Per process, after the first optimizer step: what FSDP shards (docs/benchmarks.md).
        "trainingStateBytes": result.state_bytes,
        "mixedPrecision": accelerator.mixed_precision,
        "resumedFromStep": result.resumed_from,
        "predictions": {"rows": n_predictions, "path": str(output / PREDICTIONS_FILE)},
        "progress": result.progress.model_dump(by_alias=True, mode="json"),
        "metrics": result.metrics.model_dump(by_alias=True, mode="json"),
        "history": result.history,
        "throughput": {
            "trainTokens": result.train_tokens,
            "trainSeconds": round(result.train_seconds, 3),
            "tokensPerSecond": result.progress.tokens_per_second,
        },
        "finalTrainLoss": result.metrics.train_loss,
        "wallTimeSeconds": round(time.perf_counter() - started, 3),
        "artifacts": artifacts.model_dump(by_alias=True, exclude_none=True, mode="json"),
        "versions": library_versions("accelerate"),
        "lineage": lineage.model_dump(by_alias=True, exclude_none=True, mode="json"),
    }


def _finish(config: TrainingConfig, result, artifacts: Artifacts, reporter: StatusReporter, tracked=None) -> None:
    metrics = result.metrics
    final = (f"test loss {metrics.test_loss:.4f}" if metrics.test_loss is not None
             else f"train loss {metrics.train_loss:.4f}")
    reporter.finish(
        PodReport(progress=result.progress, metrics=metrics, artifacts=artifacts, tracking=tracked),
        f"{config.method.value} training finished after {result.progress.step} steps, {final}",
    )


def run(config: TrainingConfig, reporter: StatusReporter) -> Path:
    """Trains as `config` says and returns the path of training_summary.json."""
    started = time.perf_counter()
    checked = check_training(config)  # user errors fail here, before any GPU work (sources: see cli)
    log.info("%s; memory allocator %s", checked.describe(), allocator_in_use())
    output, spec, method = checked.output, config.training, METHODS[config.method.value]
    method.check(config)  # what the method needs of this machine (qlora: CUDA, bitsandbytes)
    set_seed(spec.seed)  # before the method adds (randomly initialised) adapters
    # The train loop accumulates gradients itself (no_sync on all but a window's last batch).
    # cpu=True without CUDA: several processes then join over gloo (Accelerate only looks for
    # a CPU process group when told so).
    accelerator = Accelerator(mixed_precision="bf16" if bf16_supported() else "no", cpu=not torch.cuda.is_available())
    rendezvous.verify(accelerator.device)  # before anything moves between the processes
    main, lineage, tracker = accelerator.is_main_process, None, None
    if main:  # final=True: past the reporter's rate limit, so the status has it from the start
        lineage = training_lineage(config, library_versions("accelerate"))
        tracker = start_training(config, lineage)  # rank 0 logs to MLflow (spec.tracking), never failing the run
        reporter.report(PodReport(lineage=lineage, tracking=tracker.report() if tracker else None), final=True)
    splits = load_splits(config.dataset, spec.seed)
    model, tokenizer, checkpoint = load_model(fsdp.model_source(config.model, spec), **method.load_options(config))
    data = tokenize_splits(splits, tokenizer, config.dataset.max_length, config.dataset.length_policy)
    counts = data.counts()
    log.info("data: %s", counts)
    model, params = _prepare(model, config, method, checkpoint)
    if spec.fsdp.enabled:  # before the retention score, so no rank ever holds the whole model on its device
        model = fsdp.shard_model(model, spec, accelerator.device)
    retention_before = score_retention(model, data, tokenizer.pad_token_id, spec.batch_size, accelerator)
    result = train(model, data, tokenizer.pad_token_id, spec, accelerator,
                   reporting(reporter.report, tracker, spec.log_every_steps) if main else lambda report: None,
                   (ShardedCheckpoints if spec.fsdp.enabled else Checkpoints)(output, spec.checkpoints_to_keep, accelerator))
    finish_metrics(result.metrics, model, data, tokenizer.pad_token_id, spec.batch_size, accelerator, retention_before)
    if fsdp.is_sharded(model):  # the main process gets a plain model with the trained weights, to save as usual
        model = fsdp.unsharded_copy(model, lambda: _prepare(load_model(config.model, **method.load_options(config))[0],
                                                            config, method, checkpoint)[0], main)
    if not main:
        accelerator.wait_for_everyone()
        return output / SUMMARY_FILE

    output.mkdir(parents=True, exist_ok=True)
    model = accelerator.unwrap_model(model)
    n_predictions = write_predictions(model, tokenizer, data.splits["test"][:spec.prediction_rows], output / PREDICTIONS_FILE)
    model_path = method.save(model, tokenizer, output, config)
    artifacts = Artifacts(output_path=str(output), model_path=str(model_path), summary_path=str(output / SUMMARY_FILE),
                          uri=config.output.uri)
    summary = _summary(config, result, checkpoint=checkpoint, counts=counts, params=params, accelerator=accelerator,
                       n_predictions=n_predictions, artifacts=artifacts, started=started, lineage=lineage)
    Path(artifacts.summary_path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_model_card(output / MODEL_CARD_FILE, summary)
    tracked = finish_training(tracker, result.metrics, result.progress.step,
                              [Path(model_path), Path(artifacts.summary_path), output / MODEL_CARD_FILE])
    if config.output.uri:  # after everything is written locally; refuses an existing prefix
        names = [Path(model_path).name, SUMMARY_FILE, MODEL_CARD_FILE, PREDICTIONS_FILE]
        objects.upload(output, config.output.uri, names,
                       lambda upload: reporter.report(PodReport(progress=result.progress.model_copy(update={"upload": upload})),
                                                      final=upload.done))
    _finish(config, result, artifacts, reporter, tracked)
    accelerator.wait_for_everyone()
    return Path(artifacts.summary_path)
