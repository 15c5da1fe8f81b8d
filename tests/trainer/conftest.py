"""Fixtures for the trainer tests: tiny offline models and data, and an isolated environment."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may reach the hub

from tinymodels import make_rows, write_jsonl  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@pytest.fixture
def dataset_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", make_rows())


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path, monkeypatch):
    """Keeps each test's model cache and cluster settings out of the real environment."""
    monkeypatch.setenv("KUBETUNE_CACHE", str(tmp_path / "cache"))
    for name in ("KUBETUNE_JOB_NAME", "KUBETUNE_JOB_NAMESPACE", "KUBETUNE_TERMINATION_LOG", "KUBETUNE_WRITABLE_ROOTS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def termination_log(tmp_path, monkeypatch) -> Path:
    """Where the CLI under test writes its termination message."""
    path = tmp_path / "termination-log"
    monkeypatch.setenv("KUBETUNE_TERMINATION_LOG", str(path))
    return path
