"""How much memory each model of an evaluation needs, and the check-phase refusal of a model
the pod's devices cannot hold (docs/evaljob.md, sharded evaluation).

A model's workload is the largest batch any of the config's tasks runs: generation holds
batchSize rows of maxInputLength + maxNewTokens positions in its KV cache; multiple-choice and
perplexity score batchSize sequences of maxInputLength tokens with every position's logits;
lm-eval scores lmEval.batchSize requests of up to LM_EVAL_TOKENS tokens. Models load one at a
time, so each is compared with the whole pod on its own.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from kubetune_api.catalog import EvalTask
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_trainer.model.memory import EstimateError, MemoryEstimate, estimate_memory
from kubetune_trainer.model.placement import DeviceQuery, Devices, check_fits, resolved_dtype, visible_devices

log = logging.getLogger(__name__)

LM_EVAL_TOKENS = 2048  # lm-eval's requests are rarely longer (its own default max length)


def workloads(config: EvalConfig) -> list[tuple[int, int, bool]]:
    """(batch, tokens, keeps every position's logits) of each task of the config."""
    if config.lm_eval is not None:
        return [(config.lm_eval.batch_size, LM_EVAL_TOKENS, True)]
    found = []
    for _, part in config.task_configs():
        spec = part.generation
        if part.task == EvalTask.generation:
            found.append((spec.batch_size, spec.max_input_length + spec.max_new_tokens, False))
        else:
            found.append((spec.batch_size, spec.max_input_length, True))
    return found


def model_estimate(config: EvalConfig, spec: EvalModel, directory: Path, devices: Devices) -> MemoryEstimate:
    """The largest estimate over the config's tasks for one model (a checkpoint directory)."""
    dtype = resolved_dtype(spec.dtype.value, devices)
    estimates = [estimate_memory(directory, dtype, batch, tokens, logits) for batch, tokens, logits in workloads(config)]
    return max(estimates, key=lambda e: e.total)


def check_evaluation_memory(config: EvalConfig, locations: list[Path], query: Optional[DeviceQuery] = None) -> None:
    """ConfigError naming the first model (models[<name>]) that cannot fit the pod's devices
    (`query`, visible_devices by default), with its estimate and the devices' memory. A .gguf
    file is sized once converted (at load)."""
    devices = None
    for spec, location in zip(config.models, locations):
        field = f"models[{spec.name}]"
        if not location.is_dir():
            log.info("%s: %s is a GGUF file; its memory is not estimated before conversion", field, location)
            continue
        devices = devices or (query or visible_devices)()  # asked once, and only when a model is to be sized
        try:
            estimate = model_estimate(config, spec, location, devices)
        except EstimateError as e:
            log.warning("%s: no memory estimate (%s); the model loads unchecked", field, e)
            continue
        log.info("%s: needs %s", field, estimate.describe())
        check_fits(estimate, devices, field)
