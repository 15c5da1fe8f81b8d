"""Prompt tuning: a trainable soft prompt prepended to every input; the model stays frozen.

PEFT prepends the virtual tokens to the inputs, so the outputs are longer than the labels by
numVirtualTokens; the loss (kubetune_trainer.training.loss) drops those leading positions.
"""
from kubetune_api.training import PromptTuningSpec


def prepare(model, config, checkpoint=None):
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    spec = config.prompt_tuning or PromptTuningSpec()
    text_init = {}
    if spec.init_text:
        text_init = {"prompt_tuning_init": PromptTuningInit.TEXT, "prompt_tuning_init_text": spec.init_text,
                     "tokenizer_name_or_path": str(checkpoint)}
    return get_peft_model(model, PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=spec.num_virtual_tokens, **text_init,
    ))
