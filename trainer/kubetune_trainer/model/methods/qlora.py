"""QLoRA: LoRA adapters on a base model loaded in 4-bit NF4 (bitsandbytes, CUDA only)."""
import importlib.util

from kubetune_api.errors import ConfigError
from kubetune_trainer.model.methods import lora


def check(config) -> None:
    import torch

    missing = []
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("the bitsandbytes package (pip install bitsandbytes)")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU")
    if missing:
        raise ConfigError(f"method qlora needs {' and '.join(missing)}, which this machine lacks; use method lora instead")


def load_options(config) -> dict:
    import torch
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute,
    )}


def prepare(model, config, checkpoint=None):
    from peft import prepare_model_for_kbit_training

    # Casts norms to fp32 and makes inputs require grads so checkpointed blocks backpropagate.
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.training.gradient_checkpointing)
    return lora.prepare(model, config)
