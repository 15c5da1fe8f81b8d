"""Prefix tuning: trainable key/value prefixes in every attention layer; the model stays frozen."""
from kubetune_api.training import PrefixTuningSpec


def prepare(model, config, checkpoint=None):
    from peft import PrefixTuningConfig, TaskType, get_peft_model

    spec = config.prefix_tuning or PrefixTuningSpec()
    return get_peft_model(model, PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec.num_virtual_tokens))
