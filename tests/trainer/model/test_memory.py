"""The memory estimate from a checkpoint's config (kubetune_trainer.model.memory) against what
transformers actually builds: parameter counts of tiny models of each family, tied and untied,
the safetensors fallback, and the KV cache a forward pass really holds."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
import transformers as T

from kubetune_trainer.model.memory import (DTYPE_BYTES, EstimateError, estimate_memory, kv_cache_bytes, parameter_count,
                                           stored_tensors)

SHAPE = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)

CONFIGS = [
    pytest.param(T.LlamaConfig, T.LlamaForCausalLM, dict(num_key_value_heads=2), id="llama-gqa-untied"),
    pytest.param(T.LlamaConfig, T.LlamaForCausalLM, dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True,
                                                         tie_word_embeddings=True), id="llama-biases-tied"),
    pytest.param(T.MistralConfig, T.MistralForCausalLM, dict(num_key_value_heads=1, head_dim=16), id="mistral-head-dim"),
    pytest.param(T.Qwen2Config, T.Qwen2ForCausalLM, dict(num_key_value_heads=2, tie_word_embeddings=True), id="qwen2-qkv-bias-tied"),
    pytest.param(T.Qwen2Config, T.Qwen2ForCausalLM, dict(num_key_value_heads=2), id="qwen2-untied"),
    pytest.param(T.Qwen3Config, T.Qwen3ForCausalLM, dict(num_key_value_heads=2, head_dim=12), id="qwen3-qk-norm"),
    pytest.param(T.GemmaConfig, T.GemmaForCausalLM, dict(num_key_value_heads=1, head_dim=8), id="gemma-tied"),
    pytest.param(T.Gemma2Config, T.Gemma2ForCausalLM, dict(num_key_value_heads=1, head_dim=8), id="gemma2-four-norms"),
    pytest.param(T.Gemma3TextConfig, T.Gemma3ForCausalLM, dict(num_key_value_heads=1, head_dim=8,
                                                               tie_word_embeddings=False), id="gemma3-untied"),
    pytest.param(T.Phi3Config, T.Phi3ForCausalLM, dict(num_key_value_heads=2, pad_token_id=0), id="phi3-fused"),
]


def _meta_model(model_class, config):
    with torch.device("meta"):  # shapes only: no memory, no weights
        return model_class(config)


@pytest.mark.parametrize("config_class, model_class, extra", CONFIGS)
def test_parameter_count_is_the_models_own(config_class, model_class, extra):
    config = config_class(**SHAPE, **extra)
    model = _meta_model(model_class, config)
    # What config.json holds: the dict save_pretrained writes, read back as JSON.
    saved = json.loads(config.to_json_string())
    assert parameter_count(saved) == sum(p.numel() for p in model.parameters())


def test_tied_embeddings_default_per_family_when_config_json_is_silent():
    for config_class, model_class in ((T.GemmaConfig, T.GemmaForCausalLM), (T.LlamaConfig, T.LlamaForCausalLM)):
        config = config_class(**SHAPE, num_key_value_heads=2)
        saved = json.loads(config.to_json_string())
        saved.pop("tie_word_embeddings", None)
        assert parameter_count(saved) == sum(p.numel() for p in _meta_model(model_class, config).parameters())


def test_an_unknown_architecture_is_counted_from_the_safetensors_headers(tmp_path):
    config = T.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=96, n_positions=64)
    model = T.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path)
    assert parameter_count(json.loads((tmp_path / "config.json").read_text())) is None
    parameters, stored = stored_tensors(tmp_path)
    assert parameters == sum(p.numel() for p in model.parameters())
    assert stored == sum(p.numel() * p.element_size() for p in model.parameters())
    estimate = estimate_memory(tmp_path, "bfloat16", batch=1, tokens=8, scores_logits=False)
    assert estimate.parameters == parameters and estimate.weight_bytes == parameters * 2


def test_a_checkpoint_without_config_or_weights_cannot_be_estimated(tmp_path):
    with pytest.raises(EstimateError, match="config.json"):
        estimate_memory(tmp_path, "float32", 1, 8, False)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "unknown-thing"}))
    with pytest.raises(EstimateError, match="no safetensors weights"):
        estimate_memory(tmp_path, "float32", 1, 8, False)


@pytest.mark.parametrize("config_class, model_class, extra", CONFIGS[:1] + CONFIGS[2:3] + CONFIGS[5:6])
def test_kv_cache_is_what_a_forward_pass_holds(config_class, model_class, extra):
    torch.manual_seed(0)
    config = config_class(**SHAPE, **extra)
    model = model_class(config).to(torch.bfloat16).eval()
    batch, tokens = 3, 7
    with torch.inference_mode():
        out = model(input_ids=torch.randint(0, SHAPE["vocab_size"], (batch, tokens)), use_cache=True)
    cache = out.past_key_values
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert kv_cache_bytes(json.loads(config.to_json_string()), DTYPE_BYTES["bfloat16"], batch, tokens) == held


def test_the_estimate_adds_weights_cache_and_logits_and_says_so(tiny_model_dir):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    model = T.AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    parameters = sum(p.numel() for p in model.parameters())
    estimate = estimate_memory(tiny_model_dir, "float16", batch=4, tokens=100, scores_logits=True)
    assert estimate.parameters == parameters and estimate.weight_bytes == 2 * parameters
    assert estimate.kv_cache_bytes == kv_cache_bytes(config, 2, 4, 100)
    assert estimate.logits_bytes == 4 * 100 * config["vocab_size"] * (2 + 8)
    assert estimate.total == estimate.weight_bytes + estimate.kv_cache_bytes + estimate.logits_bytes
    text = estimate.describe()
    assert "2 bytes float16" in text and "for batch 4 x 100 tokens" in text and "logits" in text
    generation = estimate_memory(tiny_model_dir, "float16", batch=4, tokens=100, scores_logits=False)
    assert generation.logits_bytes == 0 and "logits" not in generation.describe()


@pytest.mark.parametrize("change", [{"num_attention_heads": 0}, {"vocab_size": "many"},
                                    {"num_hidden_layers": -30}, {"head_dim": -8}])
def test_a_config_no_model_has_is_an_estimate_error_not_a_crash(tiny_model_dir, tmp_path, change):
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(EstimateError, match="config.json"):
        estimate_memory(directory, "float32", batch=2, tokens=16, scores_logits=True)
