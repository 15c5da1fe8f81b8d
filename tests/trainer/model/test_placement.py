"""Sharded evaluation's placement (kubetune_trainer.model.placement): the device map that spreads
a model over a pod's GPUs, computed by accelerate's planner on a meta-device copy (no GPU
needed), and the fit check's numbers."""
from __future__ import annotations

import pytest
import torch
import transformers as T

from kubetune_api.errors import ConfigError
from kubetune_trainer.model import placement
from kubetune_trainer.model.memory import GIB, MemoryEstimate
from kubetune_trainer.model.placement import Devices, check_fits, load_options, max_memory, resolved_dtype

LAYERS = 6


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """config.json of a 6-layer llama: the planner needs no weights."""
    directory = tmp_path_factory.mktemp("six-layers")
    T.LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=2).save_pretrained(directory)
    return directory


def _model_bytes(directory, dtype=torch.bfloat16) -> int:
    config = T.AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        model = T.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return sum(p.numel() * p.element_size() for p in model.parameters())


def test_two_gpus_get_a_device_map_across_both(checkpoint):
    devices = Devices("cuda", (80 * GIB, 80 * GIB), bf16=True)
    options = load_options(checkpoint, torch.bfloat16, devices, runtime_bytes=4 * GIB)
    plan = options["device_map"]
    assert set(plan.values()) == {0, 1}  # both GPUs hold layers
    assert plan["model.embed_tokens"] == 0  # inputs enter on the first GPU
    # Every decoder layer lies whole on one GPU (no layer split between two), in order.
    layers = [plan[f"model.layers.{i}"] for i in range(LAYERS)]
    assert layers == sorted(layers)


def test_the_device_map_respects_each_gpus_budget(checkpoint):
    size = _model_bytes(checkpoint)
    # Budgets of 70% of the model each: neither GPU alone could take it (accelerate's planner also
    # keeps room for the largest layer on each).
    budgets = {0: int(size * 0.7), 1: int(size * 0.7)}
    plan = placement.device_map(checkpoint, torch.bfloat16, budgets)
    config = T.AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        model = T.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    held = {0: 0, 1: 0}
    for name, module in model.named_modules():
        if name in plan:
            held[plan[name]] += sum(p.numel() * p.element_size() for p in module.parameters())
    assert all(0 < held[gpu] <= budgets[gpu] for gpu in (0, 1))


def test_a_model_larger_than_the_gpus_is_refused_by_the_planner(checkpoint):
    size = _model_bytes(checkpoint)
    with pytest.raises(ConfigError, match="does not fit the pod's 2 GPUs"):
        placement.device_map(checkpoint, torch.bfloat16, {0: size // 4, 1: size // 4})


def test_one_device_gets_no_device_map(checkpoint):
    assert load_options(checkpoint, torch.bfloat16, Devices("cuda", (80 * GIB,), True), 0) == {}
    assert load_options(checkpoint, torch.float32, Devices("cpu", (64 * GIB,)), 0) == {}


def test_each_gpu_keeps_headroom_and_its_share_of_the_cache():
    devices = Devices("cuda", (80 * GIB, 40 * GIB), True)
    budgets = max_memory(devices, runtime_bytes=10 * GIB)
    assert budgets == {0: int(80 * GIB * (1 - placement.HEADROOM)) - 5 * GIB,
                       1: int(40 * GIB * (1 - placement.HEADROOM)) - 5 * GIB}


def test_auto_dtype_resolves_as_the_loader_does():
    assert resolved_dtype("auto", Devices("cuda", (GIB,), bf16=True)) == "bfloat16"
    assert resolved_dtype("auto", Devices("cuda", (GIB,), bf16=False)) == "float32"
    assert resolved_dtype("auto", Devices("cpu", ())) == "float32"
    assert resolved_dtype("float16", Devices("cpu", ())) == "float16"


def _estimate(total_gib: float) -> MemoryEstimate:
    weights = int(total_gib * GIB) - GIB
    return MemoryEstimate(parameters=weights // 2, weight_bytes=weights, dtype="bfloat16", kv_cache_bytes=GIB,
                          logits_bytes=0, batch=8, tokens=2048)


def test_the_refusal_gives_the_numbers_and_how_many_gpus_would_do():
    devices = Devices("cuda", (80 * GIB, 80 * GIB), True)
    check_fits(_estimate(140), devices, "models[big]")  # 140 of 144 usable GiB: fits
    with pytest.raises(ConfigError) as refused:
        check_fits(_estimate(200), devices, "models[big]")
    message = str(refused.value)
    assert message.startswith("models[big]: the model needs ~200.0 GiB")
    assert "the pod's 2 GPUs hold 2 x 80.0 GiB = 160.0 GiB, 144.0 GiB usable" in message
    assert "resources.gpu: 3 or more" in message  # 200 / 72 usable per GPU


def test_on_cpu_the_pods_memory_limit_is_compared_and_no_limit_skips():
    with pytest.raises(ConfigError, match=r"the pod's memory limit of 16.0 GiB.*resources.memory to at least 23Gi"):
        check_fits(_estimate(20), Devices("cpu", (16 * GIB,)), "models[base]")
    check_fits(_estimate(20_000), Devices("cpu", ()), "models[base]")  # no limit: nothing to compare


def test_cgroup_limit_is_read_and_unlimited_is_none(tmp_path, monkeypatch):
    limit = tmp_path / "memory.max"
    monkeypatch.setattr(placement, "CGROUP_LIMITS", (limit,))
    limit.write_text("17179869184\n")
    assert placement.cgroup_memory_limit() == 16 * GIB
    limit.write_text("max\n")
    assert placement.cgroup_memory_limit() is None
    if not torch.cuda.is_available():  # on CPU the one device is the pod's memory limit
        assert placement.visible_devices() == Devices("cpu", ())
        limit.write_text("17179869184\n")
        assert placement.visible_devices() == Devices("cpu", (16 * GIB,))
