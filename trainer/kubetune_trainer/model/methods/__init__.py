"""Fine-tuning methods behind one registry: which parameters train, and how the result saves.

Each method is a small module with a `prepare(model, config, checkpoint)` that returns the
model to train (plain, with only some parameters trainable, or wrapped by PEFT). A PeftModel
saves only its adapter (adapter/), a plain model all its weights (model/); the tokenizer goes
alongside so the directory is usable on its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubetune_api import layout
from kubetune_api.training import TrainingConfig
from kubetune_trainer.model.methods import full, ia3, lora, prefix_tuning, prompt_tuning, qlora, selective


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int


def count_parameters(model) -> ParameterCount:
    params = list(model.parameters())  # tied weights appear once
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def _no_check(config: TrainingConfig) -> None:
    pass


def _no_load_options(config: TrainingConfig) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    prepare: Callable  # (base model, config, checkpoint dir) -> the model to train
    check: Callable = _no_check  # (config) -> None; raises ConfigError before anything loads
    load_options: Callable = _no_load_options  # (config) -> extra from_pretrained arguments

    def save(self, model, tokenizer, output_path: Path, config: TrainingConfig) -> Path:
        from peft import PeftModel

        if isinstance(model, PeftModel) and config.method.value in ("lora", "qlora") and config.lora.merge_on_save:
            model = model.merge_and_unload()
        directory = Path(output_path) / (layout.ADAPTER_DIR if isinstance(model, PeftModel) else layout.MODEL_DIR)
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory


METHODS = {
    "full": Method(full.prepare),
    "lora": Method(lora.prepare),
    "qlora": Method(qlora.prepare, qlora.check, qlora.load_options),
    "prompt-tuning": Method(prompt_tuning.prepare),
    "prefix-tuning": Method(prefix_tuning.prepare),
    "ia3": Method(ia3.prepare),
    "selective": Method(selective.prepare),
}
