"""`kubetune-promote --config FILE`: the promotion pod's entry point.

Copies a FineTuneJob's adapter or model (with its tokenizer), model card, training summary,
evaluation scores and a record of the gate and lineage (promotion.json) to the destination,
merging a LoRA adapter into its base model first when asked, and a GGUF file of the model next
to it when spec.promotion.export asks (kubetune_trainer.promotion.gguf_export). Everything is staged in a
temporary sibling directory and renamed into place at the end, so a failure leaves nothing at
the destination; an object-store destination (fsspec) is staged locally, uploaded, and
removed again if the upload fails. A destination that exists already is refused.

Exit codes and the termination message as in kubetune_trainer.entrypoint.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from kubetune_api import layout
from kubetune_api.errors import ConfigError
from kubetune_api.promotion import PromoteConfig, is_object_store, load_promote_config
from kubetune_api.reports import Artifacts, PodReport
from kubetune_api.tracking import TrackingReport
from kubetune_api.wire import ENV_TERMINATION_LOG
from kubetune_trainer.entrypoint import read_config, run_reported
from kubetune_trainer.reporting.lineage import digest
from kubetune_trainer.outputs import resolve_output_dir
from kubetune_trainer.sources import fetch_model, is_remote_source, stay_offline
from kubetune_trainer.reporting.status_reporter import StatusReporter
from kubetune_trainer.reporting.tracking import register_promoted

log = logging.getLogger(__name__)

RECORD_FILE = "promotion.json"


def _merged(config: PromoteConfig, directory: Path) -> None:
    """The adapter merged into its base model (peft merge_and_unload), saved as a full model."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from kubetune_trainer.model.loading import load_model

    base, _, _ = load_model(config.base_model)
    model = PeftModel.from_pretrained(base, config.model_path).merge_and_unload()
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(config.model_path).save_pretrained(directory)


def _exported(config: PromoteConfig, model_dir: Path) -> dict:
    """Writes the model as config.export asks, next to its directory; its entry in promotion.json."""
    from kubetune_trainer.promotion.gguf_export import export_gguf, file_name

    quantization = config.export.quantization
    target = model_dir.parent / file_name(quantization)
    export_gguf(model_dir, target, quantization, name=config.record.get("fineTuneJob", {}).get("name") or model_dir.name)
    written = digest(str(target))
    return {"format": config.export.format.value, "file": target.name, "quantization": quantization.value,
            "bytes": written.bytes, "sha256": written.sha256}


def stage(config: PromoteConfig, staging: Path) -> Path:
    """Writes everything the destination gets into `staging`; returns the model's directory there."""
    source = Path(config.model_path)
    if not source.is_dir():
        raise ConfigError(f"model path {config.model_path!r} is not a directory")
    if config.merge_adapter:
        model_dir = staging / layout.MODEL_DIR
        _merged(config, model_dir)
    else:
        model_dir = staging / (layout.ADAPTER_DIR if config.adapter else layout.MODEL_DIR)
        shutil.copytree(source, model_dir)
    exported = _exported(config, model_dir) if config.export is not None else None
    for name, path in config.files.items():
        if Path(path).exists():
            shutil.copy2(path, staging / name)
        else:
            log.warning("%s: %s does not exist; not promoted", name, path)
    record = {**config.record, "source": config.model_path, "merged": config.merge_adapter,
              "model": model_dir.name, "files": sorted(p.name for p in staging.iterdir())}
    if exported is not None:
        record["export"] = exported
    (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return model_dir


# Called with the promoted model's local directory, before a staged copy goes away: logs it to the
# run and registers it (spec.tracking); returns what the pod reports about that.
Register = Callable[[Path], Optional[TrackingReport]]


def _to_directory(config: PromoteConfig, register: Register) -> tuple[str, Optional[TrackingReport]]:
    """Stages next to the destination, then renames into place (one atomic step)."""
    destination = resolve_output_dir(config.destination, "promotion.destination")
    if destination.exists():
        raise ConfigError(f"promotion.destination {config.destination!r} exists; promotion never overwrites")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.promoting-", dir=destination.parent))
    try:
        model_dir = stage(config, staging)
        os.rename(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    promoted = destination / model_dir.name
    return str(promoted), register(promoted)


def _to_object_store(config: PromoteConfig, register: Register) -> tuple[str, Optional[TrackingReport]]:
    """Stages locally, then uploads; a failed upload removes what it wrote."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(config.destination)
    if fs.exists(root):
        raise ConfigError(f"promotion.destination {config.destination!r} exists; promotion never overwrites")
    with tempfile.TemporaryDirectory(prefix="kubetune-promote-") as staging:
        model_dir = stage(config, Path(staging))
        try:
            fs.put(f"{staging}/", root, recursive=True)
        except BaseException:
            if fs.exists(root):
                fs.rm(root, recursive=True)
            raise
        tracked = register(model_dir)  # the staged copy: exactly what was uploaded (merged, if so)
    return f"{config.destination.rstrip('/')}/{model_dir.name}", tracked


def promote(config: PromoteConfig, reporter: StatusReporter) -> str:
    """Promotes as `config` says; returns where the model now is."""
    if config.base_model is not None and is_remote_source(config.base_model.path):
        fetch_model(config.base_model.path)  # hf:// may go online (the model cache usually has it)
    stay_offline()  # the rest loads local files only
    # The model as promoted (merged, if so) is what is logged to the run and registered.
    copy = _to_object_store if is_object_store(config.destination) else _to_directory
    model_path, tracked = copy(config, lambda model_dir: register_promoted(config, model_dir))
    log.info("promoted %s to %s", config.model_path, model_path)
    artifacts = Artifacts(output_path=config.destination, model_path=model_path)
    version = f", registered as version {tracked.model_version}" if tracked and tracked.model_version else ""
    reporter.finish(PodReport(artifacts=artifacts, tracking=tracked), f"promoted to {config.destination}{version}")
    return model_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubetune-promote", description="Promote a fine-tuned model to its destination.")
    parser.add_argument("--config", required=True, help="YAML or JSON promotion config (written by the operator)")
    parser.set_defaults(output=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # No status patches: the termination message carries the outcome to the operator.
    reporter = StatusReporter(termination_log=os.environ.get(ENV_TERMINATION_LOG))
    code, result = run_reported("promotion", lambda: promote(read_config(load_promote_config, args), reporter), reporter)
    if code == 0:
        print(result)
    return code


if __name__ == "__main__":
    sys.exit(main())
