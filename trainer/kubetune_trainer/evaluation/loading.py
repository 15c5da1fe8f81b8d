"""Loads a model to evaluate: the base model as kubetune-train loads it, plus its adapter."""
from __future__ import annotations

import logging

import torch

from kubetune_api.training import ModelSource
from kubetune_api.evaluation import EvalModel
from kubetune_api.errors import ModelSourceError
from kubetune_trainer.checks import check_adapter_path
from kubetune_trainer.model.loading import load_model

log = logging.getLogger(__name__)


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_eval_model(spec: EvalModel):
    """(model in eval mode on the device, tokenizer); the adapter, if any, merged in."""
    model, tokenizer, _ = load_model(ModelSource(path=spec.path, dtype=spec.dtype))
    if spec.adapter:
        adapter = check_adapter_path(spec.adapter, f"models[{spec.name}].adapter")
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter).merge_and_unload()  # merged: plain forward passes
        except (OSError, ValueError, RuntimeError) as e:  # wrong base model, bad weights
            raise ModelSourceError(f"models[{spec.name}].adapter {spec.adapter!r}: cannot apply it to {spec.path}: {e}") from e
        log.info("%s: adapter %s merged into %s", spec.name, adapter, spec.path)
    return model.to(device()).eval(), tokenizer
