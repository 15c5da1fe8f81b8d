"""Fixtures for the evaluation tests: the tiny model, a random LoRA adapter for it, and rows."""
from __future__ import annotations

from pathlib import Path

import pytest

from tinymodels import ANIMALS, make_rows, write_jsonl

CHOICES = [" " + a for a in ANIMALS[:3]]


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, tokenizer) of the tiny checkpoint, loaded as the evaluator loads it."""
    from kubetune_api.evaluation import EvalModel
    from kubetune_trainer.evaluation.loading import load_eval_model

    return load_eval_model(EvalModel(name="tiny", path=str(tiny_model_dir)))


@pytest.fixture(scope="session")
def tiny_adapter(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter with random (not zero) weights, so the adapted model answers differently."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    directory = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(directory)
    return directory


@pytest.fixture
def eval_rows() -> list[dict]:
    """The tiny task's rows with three options each (the answer is one of them by text)."""
    return [{**row, "choices": CHOICES, "label": row["answer"] if row["answer"] in CHOICES else 0}
            for row in make_rows(12)]


@pytest.fixture
def eval_file(tmp_path, eval_rows) -> Path:
    return write_jsonl(tmp_path / "eval.jsonl", eval_rows)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keeps each test's model cache and cluster settings out of the real environment."""
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    for name in ("KUBETUNE_JOB_NAME", "KUBETUNE_JOB_NAMESPACE", "KUBETUNE_TERMINATION_LOG", "KUBETUNE_JOB_PLURAL"):
        monkeypatch.delenv(name, raising=False)
