"""Loads a model to evaluate: the base model as kubetune-train loads it, plus its adapter.

With several GPUs visible (an EvalJob with resources.gpu > 1) the model is sharded across them
by a device map (kubetune_trainer.model.placement) that leaves each GPU room for its share of
the evaluation's KV cache and logits; the adapter is applied on top of the sharded model and
merged in place. With one device the model is moved onto it whole.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch

from kubetune_api.training import ModelSource
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_api.errors import ModelSourceError
from kubetune_trainer.checks import check_adapter_path
from kubetune_trainer.evaluation.sizing import model_estimate
from kubetune_trainer.model.loading import checkpoint_dir, load_model, torch_dtype
from kubetune_trainer.model.memory import EstimateError
from kubetune_trainer.model.placement import Devices, load_options, visible_devices

log = logging.getLogger(__name__)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def placement_options(spec: EvalModel, config: Optional[EvalConfig], devices: Devices) -> dict:
    """from_pretrained keywords for `spec` on `devices`: a device map across several GPUs, each
    left room for its share of the KV cache and logits of `config`'s largest batch."""
    if devices.kind != "cuda" or len(devices.totals) < 2:
        return {}
    directory = checkpoint_dir(spec.path)
    runtime = 0
    if config is not None:
        try:
            estimate = model_estimate(config, spec, directory, devices)
            runtime = estimate.kv_cache_bytes + estimate.logits_bytes
        except EstimateError as e:
            log.warning("%s: no estimate of the KV cache and logits (%s); the GPUs keep only the fixed headroom", spec.name, e)
    return load_options(directory, torch_dtype(spec.dtype), devices, runtime)


def load_eval_model(spec: EvalModel, config: Optional[EvalConfig] = None, devices: Optional[Devices] = None):
    """(model in eval mode on the device, or sharded across the GPUs, tokenizer); the adapter,
    if any, merged in."""
    options = placement_options(spec, config, devices or visible_devices())
    model, tokenizer, _ = load_model(ModelSource(path=spec.path, dtype=spec.dtype), **options)
    if spec.adapter:
        adapter = check_adapter_path(spec.adapter, f"models[{spec.name}].adapter")
        from peft import PeftModel

        try:
            # PEFT puts each adapter weight beside its base layer, on that layer's GPU when sharded.
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()  # merged: plain forward passes
        except (OSError, ValueError, RuntimeError) as e:  # wrong base model, bad weights
            raise ModelSourceError(f"models[{spec.name}].adapter {spec.adapter!r}: cannot apply it to {spec.path}: {e}") from e
        log.info("%s: adapter %s merged into %s", spec.name, adapter, spec.path)
    if "device_map" not in options:
        model = model.to(device())
    return model.eval(), tokenizer
