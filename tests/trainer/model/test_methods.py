"""Each method on the tiny model: loss falls, only the intended parameters change, and the
saved result reloads with plain transformers/peft and gives the trained model's logits."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from kubetune_api.training import TrainingConfig
from kubetune_trainer.data.tokenization import IGNORE_INDEX, Tokenized
from kubetune_api.errors import ConfigError
from kubetune_trainer.model.methods import METHODS, count_parameters
from kubetune_trainer.training.predictions import write_predictions
from training_runs import make_config, probe, run_training, train_losses  # noqa: F401 (probe: a fixture)

# method, its block, a predicate naming the parameters that must train (and change), the saved subdir
CASES = {
    "full": ({}, lambda name: True, "model"),
    "lora-merged": ({"lora": {"r": 8, "alpha": 16, "dropout": 0.0, "targetModules": ["q_proj", "v_proj"], "mergeOnSave": True}},
                    lambda name: "lora_" in name, "model"),
    "prompt-tuning": ({"promptTuning": {"numVirtualTokens": 4, "initText": "Which animal"}},
                      lambda name: "prompt_encoder" in name, "adapter"),
    "prefix-tuning": ({"prefixTuning": {"numVirtualTokens": 4}}, lambda name: "prompt_encoder" in name, "adapter"),
    "ia3": ({"ia3": {"targetModules": ["k_proj", "v_proj", "down_proj"], "feedforwardModules": ["down_proj"]}},
            lambda name: "ia3_" in name, "adapter"),
    "selective": ({"selective": {"patterns": ["norm"], "lastLayers": 1}},
                  lambda name: "norm" in name or ".layers.1." in name, "model"),
}
LEARNING_RATES = {"prompt-tuning": 0.1, "prefix-tuning": 0.1, "ia3": 0.05}


@pytest.mark.parametrize("case", list(CASES))
def test_method_trains_only_its_parameters_and_reloads(case, tiny_model_dir, dataset_file, tmp_path, probe):
    block, should_train, subdir = CASES[case]
    method = case.removesuffix("-merged")
    config = make_config(tiny_model_dir, dataset_file, tmp_path / "out", method="full",
                         learningRate=LEARNING_RATES.get(method, 1e-2), maxSteps=20)
    config = TrainingConfig.model_validate({**config.model_dump(by_alias=True, exclude={"lora"}), "method": method, **block})
    model, tokenizer, result, before = run_training(config)
    losses = train_losses(result)
    assert losses[-1] < 0.8 * losses[0], losses

    params = count_parameters(model)
    assert 0 < params.trainable <= params.total
    for name, p in model.named_parameters():
        intended = should_train(name)
        assert p.requires_grad == intended, name
        assert torch.equal(p, before[name]) != intended, name  # trained ones moved, the rest did not
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=probe).logits
    # Greedy generation works through every method's wrapper (virtual tokens included).
    prompt = tokenizer("Which animal is red cat?\nAnswer:")["input_ids"]
    row = Tokenized(prompt + [tokenizer.eos_token_id], [IGNORE_INDEX] * len(prompt) + [tokenizer.eos_token_id])
    assert write_predictions(model, tokenizer, [row], tmp_path / "predictions.jsonl", max_new_tokens=3) == 1
    prediction = json.loads((tmp_path / "predictions.jsonl").read_text())
    assert prediction["prompt"] == "Which animal is red cat?\nAnswer:" and prediction["reference"] == ""

    saved = METHODS[method].save(model, tokenizer, tmp_path / "out", config)
    assert saved == tmp_path / "out" / subdir
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / subdir if subdir == "model" else tiny_model_dir)
    if subdir == "adapter":
        reloaded = PeftModel.from_pretrained(reloaded, saved)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=probe).logits, expected, rtol=1e-4, atol=1e-4)


def test_selective_without_a_match_or_a_block_is_an_error(tiny_model_dir, dataset_file, tmp_path):
    from kubetune_trainer.model.loading import load_model

    with pytest.raises(ValidationError, match="selective block"):
        make_config(tiny_model_dir, dataset_file, tmp_path, method="selective")
    config = make_config(tiny_model_dir, dataset_file, tmp_path, method="full")
    config = TrainingConfig.model_validate({**config.model_dump(by_alias=True), "method": "selective", "selective": {"patterns": ["nothing_like_this"]}})
    model, _, _ = load_model(config.model)
    with pytest.raises(ConfigError, match="no parameter matches"):
        METHODS["selective"].prepare(model, config, None)


def test_a_block_for_another_method_is_refused(tiny_model_dir, dataset_file, tmp_path):
    config = make_config(tiny_model_dir, dataset_file, tmp_path)
    with pytest.raises(ValidationError, match="ia3: set but method is lora"):
        TrainingConfig.model_validate({**config.model_dump(by_alias=True), "ia3": {}})
    with pytest.raises(ValidationError, match="driftPenalty"):
        make_config(tiny_model_dir, dataset_file, tmp_path, driftPenalty=1.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine can run qlora")
def test_qlora_names_what_is_missing(tiny_model_dir, dataset_file, tmp_path):
    config = make_config(tiny_model_dir, dataset_file, tmp_path, method="qlora")
    with pytest.raises(ConfigError, match="method qlora needs .*a CUDA GPU.*use method lora"):
        METHODS["qlora"].check(config)
