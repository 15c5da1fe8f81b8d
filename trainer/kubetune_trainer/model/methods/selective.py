"""Selective fine-tuning: only parameters matched by name patterns or in the last N blocks train."""
import re

from kubetune_api.errors import ConfigError

BLOCK_INDEX = re.compile(r"\.layers\.(\d+)\.")  # decoder blocks in Llama-style models


def selected(name: str, patterns: list[re.Pattern], first_trained_layer: int | None) -> bool:
    if any(p.search(name) for p in patterns):
        return True
    block = BLOCK_INDEX.search(name)
    return first_trained_layer is not None and block is not None and int(block.group(1)) >= first_trained_layer


def prepare(model, config, checkpoint=None):
    spec = config.selective
    try:
        patterns = [re.compile(p) for p in spec.patterns]
    except re.error as e:
        raise ConfigError(f"selective.patterns: {e}") from e
    first = None
    if spec.last_layers is not None:
        layers = model.config.num_hidden_layers
        if spec.last_layers > layers:  # more than the model has would quietly train every block
            raise ConfigError(f"selective.lastLayers {spec.last_layers}: the model has only {layers} layers; set at most {layers}")
        first = layers - spec.last_layers
    model.requires_grad_(False)
    chosen = 0
    for name, param in model.named_parameters():
        if selected(name, patterns, first):
            param.requires_grad_(True)
            chosen += 1
    if not chosen:
        raise ConfigError(f"selective: no parameter matches patterns {spec.patterns} or lastLayers {spec.last_layers}")
    return model
