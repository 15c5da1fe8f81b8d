"""Training runs for trainer tests: a config over the tiny model, one run in-process, its losses."""
from __future__ import annotations

import pytest
from accelerate import Accelerator
from accelerate.utils import set_seed

from kubetune_api.training import TrainingConfig
from kubetune_trainer.data.splits import load_splits
from kubetune_trainer.data.tokenization import tokenize_splits
from kubetune_trainer.model.loading import load_model
from kubetune_trainer.model.methods import METHODS
from kubetune_trainer.training.loop import train
from tinymodels import TEMPLATE


LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]


def make_config(model_dir, data, output, method="lora", **training) -> TrainingConfig:
    return TrainingConfig.model_validate({
        "model": {"path": str(model_dir)},
        "dataset": {"path": str(data), "promptTemplate": TEMPLATE, "completionField": "answer", "maxLength": 64},
        "method": method,
        # lora settings with another method would be ignored, so the config refuses them.
        **({"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": LORA_TARGETS}} if method in ("lora", "qlora") else {}),
        "training": {"maxSteps": 30, "batchSize": 8, "learningRate": 1e-2, "logEverySteps": 5, **training},
        "output": {"path": str(output)},
    })


def run_training(config: TrainingConfig, reports: list | None = None):
    """The run's steps without the CLI; returns the trained model and a snapshot taken before training."""
    set_seed(config.training.seed)
    accelerator = Accelerator(mixed_precision="no")
    model, tokenizer, checkpoint = load_model(config.model)
    data = tokenize_splits(load_splits(config.dataset, config.training.seed), tokenizer, config.dataset.max_length)
    model = METHODS[config.method.value].prepare(model, config, checkpoint)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    result = train(model, data, tokenizer.pad_token_id, config.training, accelerator,
                   reports.append if reports is not None else lambda report: None)
    return model, tokenizer, result, before


def train_losses(result) -> list[float]:
    return [entry["trainLoss"] for entry in result.history if "trainLoss" in entry]


@pytest.fixture
def probe(tiny_tokenizer):
    return tiny_tokenizer(["Which animal is blue fox?\nAnswer: fox"], return_tensors="pt")["input_ids"]
