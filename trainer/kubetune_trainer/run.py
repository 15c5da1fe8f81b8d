"""One training run: config in; trained adapter or model, tokenizer and summary out."""
from __future__ import annotations

import json
import logging
import platform
import time
from importlib import metadata
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from kubetune_trainer.config import TrainingConfig
from kubetune_trainer.data import load_splits, tokenize_splits
from kubetune_trainer.methods import METHODS, count_parameters
from kubetune_trainer.modelsource import bf16_supported, load_model
from kubetune_trainer.report import Artifacts, PodReport
from kubetune_trainer.reporter import StatusReporter
from kubetune_trainer.train import train

log = logging.getLogger(__name__)

SUMMARY_FILE = "training_summary.json"


def _versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in ("kubetune", "torch", "transformers", "peft", "accelerate"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run(config: TrainingConfig, reporter: StatusReporter) -> Path:
    """Trains as `config` says and returns the path of training_summary.json."""
    started = time.perf_counter()
    spec = config.training
    set_seed(spec.seed)  # before the method adds (randomly initialised) adapters
    accelerator = Accelerator(
        gradient_accumulation_steps=spec.gradient_accumulation_steps,
        mixed_precision="bf16" if bf16_supported() else "no",
    )
    splits = load_splits(config.dataset, spec.seed)
    model, tokenizer, checkpoint = load_model(config.model)
    data = tokenize_splits(splits, tokenizer, config.dataset.max_length)
    counts = data.counts()
    log.info("data: %s", counts)

    method = METHODS[config.method.value]
    model = method.prepare(model, config)
    params = count_parameters(model)
    log.info("%s: %d of %d parameters trainable", config.method.value, params.trainable, params.total)

    result = train(model, data, tokenizer.pad_token_id, spec, accelerator, reporter.report)

    output = Path(config.output.path).absolute()
    model_path = method.save(accelerator.unwrap_model(model), tokenizer, output)
    artifacts = Artifacts(output_path=str(output), model_path=str(model_path), summary_path=str(output / SUMMARY_FILE))
    summary = {
        "config": config.model_dump(by_alias=True, mode="json"),
        "model": {"path": config.model.path, "checkpoint": str(checkpoint)},
        "data": counts,
        "parameters": {"trainable": params.trainable, "total": params.total},
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
        "artifacts": artifacts.model_dump(by_alias=True, mode="json"),
        "versions": _versions(),
    }
    Path(artifacts.summary_path).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")

    metrics = result.metrics
    final = (f"test loss {metrics.test_loss:.4f}" if metrics.test_loss is not None
             else f"train loss {metrics.train_loss:.4f}")
    reporter.finish(
        PodReport(progress=result.progress, metrics=metrics, artifacts=artifacts),
        f"{config.method.value} training finished after {result.progress.step} steps, {final}",
    )
    return Path(artifacts.summary_path)
