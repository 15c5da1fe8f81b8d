"""bench/ scripts on a fresh machine: nothing converted or cached yet (an empty KUBETUNE_CACHE)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(script: str):
    spec = importlib.util.spec_from_file_location(Path(script).stem, ROOT / "bench" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_train_throughput_counts_matmul_weights_with_nothing_cached(tmp_path, monkeypatch):
    """matmul_params converts SmolLM2's GGUF file on first use; that must not happen on the meta device."""
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "empty-cache"))
    import torch
    from transformers import AutoConfig

    from kubetune_trainer.model.loading import checkpoint_dir

    bench = load("train_throughput.py")
    n = bench.matmul_params()
    config = AutoConfig.from_pretrained(checkpoint_dir(bench.MODEL))  # converted by the call above
    attention = config.hidden_size * (config.num_attention_heads + 2 * config.num_key_value_heads) * \
        (config.hidden_size // config.num_attention_heads) + config.hidden_size * config.hidden_size
    mlp = 3 * config.hidden_size * config.intermediate_size
    lm_head = config.vocab_size * config.hidden_size
    assert n == config.num_hidden_layers * (attention + mlp) + lm_head
    assert not torch.empty(1).is_meta  # the default device is left as it was
