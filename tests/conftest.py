"""Fixtures shared by the trainer and end-to-end tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may reach the hub

from tinymodels import build_model, build_tokenizer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved 2-layer Llama checkpoint with its tokenizer (which has no pad token)."""
    directory = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tokenizer()
    build_model(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def other_tiny_model_dir(tmp_path_factory) -> Path:
    """A second tiny checkpoint: same tokenizer and shape, other weights."""
    directory = tmp_path_factory.mktemp("tiny-llama-other")
    tokenizer = build_tokenizer()
    build_model(tokenizer, seed=1).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
