"""Sharded evaluation, end to end on CPU: the check phase refuses a model the pod's devices cannot
hold, with the estimate (a 70B-class config.json, no weights), and passes one they can; the
evaluator's load path plans a device map across 2 GPUs that leaves room for the evaluation's
KV cache."""
from __future__ import annotations

import json
import math

import pytest
import torch
import transformers as T

from kubetune_api.errors import ConfigError
from kubetune_api.evaluation import EvalConfig, EvalModel
from kubetune_trainer.checks import check_evaluation
from kubetune_trainer.evaluation import loading
from kubetune_trainer.evaluation.sizing import LM_EVAL_TOKENS, workloads
from kubetune_trainer.model.memory import GIB
from kubetune_trainer.model.placement import HEADROOM, Devices
from tinymodels import TEMPLATE

# Llama 3 70B's shape (config.json only: sizing reads no weights).
BIG = dict(vocab_size=128256, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
           num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192, tie_word_embeddings=False)
H100 = 80 * GIB


@pytest.fixture(scope="module")
def big_model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama-70b-config")
    T.LlamaConfig(**BIG).save_pretrained(directory)
    return directory


def _parameters(directory) -> int:
    with torch.device("meta"):
        model = T.AutoModelForCausalLM.from_config(T.AutoConfig.from_pretrained(directory))
    return sum(p.numel() for p in model.parameters())


def _config(model_dir, output, **overrides) -> EvalConfig:
    return EvalConfig.model_validate({
        "models": [{"name": "big", "path": str(model_dir), "dtype": "bfloat16"}], "output": {"path": str(output)},
        "dataset": {"path": str(output.parent / "rows.jsonl"), "promptTemplate": TEMPLATE, "referenceFields": ["answer"]},
        **overrides})


@pytest.fixture
def rows(tmp_path, eval_file):
    (tmp_path / "rows.jsonl").write_text(eval_file.read_text())


def _gpus(count: int):
    return lambda: Devices("cuda", (H100,) * count, bf16=True)


def test_a_model_too_big_for_the_pod_is_refused_in_the_check_phase_with_the_estimate(big_model_dir, tmp_path, rows):
    config = _config(big_model_dir, tmp_path / "out", generation={"batchSize": 8, "maxInputLength": 1920, "maxNewTokens": 128})
    with pytest.raises(ConfigError) as refused:
        check_evaluation(config, devices=_gpus(1))
    message = str(refused.value)
    parameters = _parameters(big_model_dir)
    weights = parameters * 2
    kv = 2 * BIG["num_hidden_layers"] * BIG["num_key_value_heads"] * 128 * 2 * 8 * 2048
    assert message.startswith(f"models[big]: the model needs ~{(weights + kv) / GIB:.1f} GiB "
                              f"({parameters / 1e9:.1f}B parameters x 2 bytes bfloat16 = {weights / GIB:.1f} GiB "
                              f"+ KV cache {kv / GIB:.1f} GiB for batch 8 x 2048 tokens)")
    assert f"the pod's 1 GPU holds 1 x 80.0 GiB = 80.0 GiB, {H100 * (1 - HEADROOM) / GIB:.1f} GiB usable" in message
    needed = math.ceil((weights + kv) / (H100 * (1 - HEADROOM)))
    assert f"ask for resources.gpu: {needed} or more" in message
    assert refused.value.reason == "InvalidConfig"
    check_evaluation(config, devices=_gpus(needed))  # as many GPUs as it says: the check passes


def test_a_scoring_task_counts_its_logits(big_model_dir, tmp_path, rows):
    # Perplexity keeps every position's logits (vocabulary 128k): 16 x 1024 of them outgrow 2 GPUs
    # that hold the weights and cache of generation.
    generation = {"batchSize": 16, "maxInputLength": 1024, "maxNewTokens": 16}
    logits = 16 * 1024 * BIG["vocab_size"] * (2 + 8) / GIB
    check_evaluation(_config(big_model_dir, tmp_path / "out", generation=generation), devices=_gpus(2))
    perplexity = _config(big_model_dir, tmp_path / "out", generation=generation, task="perplexity", metrics=["perplexity"],
                         dataset={"path": str(tmp_path / "rows.jsonl"), "promptTemplate": "{{ animal }}", "textField": "animal"})
    with pytest.raises(ConfigError, match=rf"\+ logits {logits:.1f} GiB for batch 16 x 1024 tokens"):
        check_evaluation(perplexity, devices=_gpus(2))


def test_suite_and_lm_eval_workloads(tmp_path):
    suite = EvalConfig.model_validate({
        "models": [{"name": "m", "path": "model"}], "output": {"path": "out"},
        "tasks": [{"name": "gen", "dataset": {"path": "a.jsonl", "promptTemplate": "{{ q }}", "referenceFields": ["a"]},
                   "generation": {"batchSize": 4, "maxInputLength": 100, "maxNewTokens": 20}},
                  {"name": "ppl", "task": "perplexity", "metrics": ["perplexity"],
                   "dataset": {"path": "b.jsonl", "promptTemplate": "{{ t }}", "textField": "t"}}]})
    assert workloads(suite) == [(4, 120, False), (8, 1024, True)]
    lm_eval = EvalConfig.model_validate({"models": [{"name": "m", "path": "model"}], "output": {"path": "out"},
                                         "task": "lm-eval", "lmEval": {"tasks": ["arc_easy"], "batchSize": 2}})
    assert workloads(lm_eval) == [(2, LM_EVAL_TOKENS, True)]


def test_the_evaluator_loads_a_model_across_two_gpus(big_model_dir, tmp_path, rows):
    """The construction test: with 2 GPUs visible, the load path hands from_pretrained a device
    map over both, each GPU's weights within its memory less its share of the KV cache."""
    config = _config(big_model_dir, tmp_path / "out")
    spec = EvalModel(name="big", path=str(big_model_dir), dtype="bfloat16")
    devices = Devices("cuda", (H100, H100), bf16=True)
    options = loading.placement_options(spec, config, devices)
    plan = options["device_map"]
    assert set(plan.values()) == {0, 1} and plan["model.embed_tokens"] == 0 and plan["lm_head"] == 1
    layers = [plan[f"model.layers.{i}"] for i in range(BIG["num_hidden_layers"])]
    assert layers == sorted(layers) and 30 <= layers.count(0) <= 50  # balanced, in order
    kv = 2 * BIG["num_hidden_layers"] * BIG["num_key_value_heads"] * 128 * 2 * 8 * (1024 + 128)
    per_layer = (_parameters(big_model_dir) - 2 * BIG["vocab_size"] * BIG["hidden_size"]) * 2 // BIG["num_hidden_layers"]
    for gpu in (0, 1):
        held = layers.count(gpu) * per_layer + BIG["vocab_size"] * BIG["hidden_size"] * 2
        assert held <= H100 * (1 - HEADROOM) - kv // 2
    assert json.loads(json.dumps(plan))  # plain names and GPU numbers, as from_pretrained takes


def test_one_gpu_or_cpu_loads_whole_and_moves_to_the_device(tiny_model_dir):
    spec = EvalModel(name="tiny", path=str(tiny_model_dir))
    assert loading.placement_options(spec, None, Devices("cuda", (H100,), True)) == {}
    model, _ = loading.load_eval_model(spec, devices=Devices("cpu", ()))
    assert not hasattr(model, "hf_device_map") and model.device.type == "cpu"
