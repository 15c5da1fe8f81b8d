"""Fixtures shared by the trainer and end-to-end tests."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in these tests may reach the hub

from tinymodels import build_model, build_tokenizer  # noqa: E402

TEST_TMP = Path(__file__).resolve().parents[1] / ".cluster" / "test-tmp"


@pytest.fixture(scope="session")
def tmp_path_factory(request):
    """Test files under .cluster/test-tmp, not /tmp: pods on the local cluster read them at the
    same host path (the node agent runs them as host processes), and each pod has its own
    emptyDir at /tmp, as on a kubelet, which hides the host's /tmp from it. Session fixtures
    such as tiny_model_dir are shared by unit and cluster tests, so this holds for every test."""
    base = TEST_TMP / str(os.getpid())
    base.parent.mkdir(parents=True, exist_ok=True)
    factory = pytest.TempPathFactory(given_basetemp=base, retention_count=0, retention_policy="all",
                                     trace=request.config.trace.get("tmpdir"), _ispytest=True)
    yield factory
    shutil.rmtree(base, ignore_errors=True)


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
