"""Fine-tuning methods: which parameters train, and where the result is saved.

Both methods save with save_pretrained: a PeftModel writes only its adapter, a plain model
writes all its weights. The tokenizer goes alongside so the directory is usable on its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubetune_trainer.config import TrainingConfig
from kubetune_trainer.errors import ConfigError


@dataclass(frozen=True)
class ParameterCount:
    trainable: int
    total: int


def count_parameters(model) -> ParameterCount:
    params = list(model.parameters())  # tied weights appear once
    return ParameterCount(sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))


def _prepare_full(model, config: TrainingConfig):
    model.requires_grad_(True)
    return model


def _prepare_lora(model, config: TrainingConfig):
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as e:  # e.g. no module matches targetModules
        raise ConfigError(f"lora.targetModules {config.lora.target_modules}: {e}") from e


@dataclass(frozen=True)
class Method:
    prepare: Callable  # (base model, config) -> the model to train
    subdir: str  # where under output.path the result goes

    def save(self, model, tokenizer, output_path: Path) -> Path:
        directory = Path(output_path) / self.subdir
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return directory


METHODS = {
    "full": Method(_prepare_full, "model"),
    "lora": Method(_prepare_lora, "adapter"),
}
