"""The images' install steps replayed once per test session (one operator venv, one
trainer venv) under a temporary directory; see dockerfiles.replay_stage."""
from __future__ import annotations

import shutil
import sys

import pytest

import dockerfiles

# download.pytorch.org is unreachable here: the test replays the trainer's lines with the
# torch index ARG empty, which the Dockerfiles define to mean the default index (PyPI, and
# this machine's local CPU wheel of the pinned torch).
NO_TORCH_INDEX = {"TORCH_INDEX_URL": ""}


@pytest.fixture(scope="session")
def base_python() -> str:
    """A plain CPython 3.11 to stand in for the base image's python3.11."""
    if sys.version_info[:2] == (3, 11):
        return getattr(sys, "_base_executable", None) or sys.executable
    found = shutil.which("python3.11")
    if not found:
        pytest.skip("no python3.11 on this machine to replay the images' install steps with")
    return found


@pytest.fixture(scope="session")
def operator_image(tmp_path_factory, base_python) -> dockerfiles.Replay:
    return dockerfiles.replay_stage(dockerfiles.parse(dockerfiles.OPERATOR_DOCKERFILE), "builder",
                                    tmp_path_factory.mktemp("operator-image"), base_python)


@pytest.fixture(scope="session")
def trainer_image(tmp_path_factory, base_python) -> dockerfiles.Replay:
    return dockerfiles.replay_stage(dockerfiles.parse(dockerfiles.TRAINER_DOCKERFILE), "builder",
                                    tmp_path_factory.mktemp("trainer-image"), base_python, NO_TORCH_INDEX)
