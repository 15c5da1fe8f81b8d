"""Training the tiny model: loss falls, the right parameters change, and results save and reload."""
from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from peft import PeftModel
from transformers import AutoModelForCausalLM

from kubetune_api.training import TrainingConfig
from kubetune_trainer.data.splits import load_splits
from kubetune_trainer.data.tokenization import tokenize_splits
from kubetune_trainer.model.methods import METHODS, count_parameters
from kubetune_trainer.model.loading import load_model
from kubetune_trainer.training.loop import total_steps, train

from training_runs import make_config, probe, run_training, train_losses  # noqa: F401 (probe: a fixture)

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
