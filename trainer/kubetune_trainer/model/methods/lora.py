"""LoRA: low-rank adapters on the named linear modules; the base stays frozen."""
from kubetune_api.errors import ConfigError


def prepare(model, config, checkpoint=None):
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
