"""Training the tiny model: loss falls, the right parameters change, and results save and reload."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel
from transformers import AutoModelForCausalLM

from kubetune_api.training import TrainingConfig
from kubetune_trainer.splits import load_splits
from kubetune_trainer.tokenization import tokenize_splits
from kubetune_trainer.methods import METHODS, count_parameters
from kubetune_trainer.model_loading import load_model
from kubetune_trainer.train import total_steps, train
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


def test_total_steps_from_epochs_or_max_steps(tmp_path):
    spec = make_config("m", "d", "o", maxSteps=None, epochs=2, gradientAccumulationSteps=3).training
    assert total_steps(10, spec) == 8  # ceil(10 / 3) = 4 per epoch
    assert total_steps(10, spec.model_copy(update={"epochs": 0.5})) == 2
    assert total_steps(10, spec.model_copy(update={"max_steps": 5})) == 5


def test_full_training_lowers_loss_changes_base_weights_and_saves_a_model(tiny_model_dir, dataset_file, tmp_path, probe):
    config = make_config(tiny_model_dir, dataset_file, tmp_path / "out", method="full")
    model, tokenizer, result, before = run_training(config)
    losses = train_losses(result)
    assert losses[-1] < 0.5 * losses[0], losses
    assert result.metrics.test_loss < 2.0 and result.metrics.validation_accuracy is not None
    changed = [name for name, p in model.named_parameters() if not torch.equal(p, before[name])]
    assert len(changed) == len(before)

    saved = METHODS["full"].save(model, tokenizer, tmp_path / "out", config)
    assert saved == tmp_path / "out" / "model"
    reloaded = AutoModelForCausalLM.from_pretrained(saved).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=probe).logits, model.eval()(input_ids=probe).logits)


def test_lora_trains_only_the_adapter_and_the_saved_adapter_reloads(tiny_model_dir, dataset_file, tmp_path, probe):
    config = make_config(tiny_model_dir, dataset_file, tmp_path / "out", method="lora")
    model, tokenizer, result, before = run_training(config)
    losses = train_losses(result)
    assert losses[-1] < 0.6 * losses[0], losses

    params = count_parameters(model)
    assert 0 < params.trainable < params.total
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.requires_grad and not torch.equal(p, before[name]), name
        else:
            assert not p.requires_grad and torch.equal(p, before[name]), name

    saved = METHODS["lora"].save(model, tokenizer, tmp_path / "out", config)
    assert saved == tmp_path / "out" / "adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= {p.name for p in saved.iterdir()}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    reloaded = PeftModel.from_pretrained(base, saved).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=probe).logits, model.eval()(input_ids=probe).logits)


def test_unknown_lora_target_is_a_config_error(tiny_model_dir, dataset_file, tmp_path):
    from kubetune_api.errors import ConfigError

    config = make_config(tiny_model_dir, dataset_file, tmp_path)
    config.lora.target_modules = ["no_such_proj"]
    model, _, _ = load_model(config.model)
    with pytest.raises(ConfigError, match="no_such_proj"):
        METHODS["lora"].prepare(model, config, None)


def test_accumulation_epochs_evaluation_and_reports(tiny_model_dir, dataset_file, tmp_path):
    # 38 training rows in batches of 4 are 10 batches: 4 optimizer steps per epoch with accumulation 3.
    config = make_config(tiny_model_dir, dataset_file, tmp_path, maxSteps=None, epochs=2, batchSize=4,
                         gradientAccumulationSteps=3, logEverySteps=3, evalEverySteps=4)
    reports = []
    _, tokenizer, result, _ = run_training(config, reports)
    assert (result.progress.step, result.progress.total_steps, result.progress.epoch) == (8, 8, 2.0)
    assert [r.progress.step for r in reports] == [3, 4, 6, 8]
    assert [e["step"] for e in result.history if "validationLoss" in e] == [4, 8]
    final = reports[-1]
    assert final.progress.percent == 100.0 and final.progress.eta_seconds == 0.0 and final.progress.tokens_per_second > 0
    assert result.metrics.test_accuracy is not None and 0 <= result.metrics.test_accuracy <= 1
    # Throughput counts real tokens only: every training example twice, padding never.
    data = tokenize_splits(load_splits(config.dataset, config.training.seed), tokenizer, config.dataset.max_length)
    assert result.train_tokens == 2 * sum(len(x.input_ids) for x in data.splits["train"])


def _distance(model, before) -> float:
    return sum(((p - before[name]) ** 2).sum().item() for name, p in model.named_parameters()) ** 0.5


@pytest.mark.parametrize("method", ["full", "selective"])
def test_drift_penalty_keeps_weights_near_the_pretrained_ones(method, tiny_model_dir, dataset_file, tmp_path):
    def distance(penalty: float) -> float:
        config = make_config(tiny_model_dir, dataset_file, tmp_path, method="full", maxSteps=10, driftPenalty=penalty)
        if method == "selective":
            config = TrainingConfig.model_validate({**config.model_dump(by_alias=True), "method": "selective",
                                                    "selective": {"lastLayers": 1}})
        model, _, _, before = run_training(config)
        return _distance(model, before)

    free, held = distance(0.0), distance(1000.0)
    assert held < 0.5 * free, (held, free)


def test_gradient_checkpointing_gives_the_same_training(tiny_model_dir, dataset_file, tmp_path):
    losses = []
    for checkpointing in (False, True):
        config = make_config(tiny_model_dir, dataset_file, tmp_path, maxSteps=5, logEverySteps=1, gradientCheckpointing=checkpointing)
        set_seed(0)
        model, tokenizer, _ = load_model(config.model)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        data = tokenize_splits(load_splits(config.dataset, config.training.seed), tokenizer, config.dataset.max_length)
        model = METHODS["lora"].prepare(model, config, None)
        losses.append(train_losses(train(model, data, tokenizer.pad_token_id, config.training, Accelerator(mixed_precision="no"))))
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
